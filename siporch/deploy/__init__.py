"""Deploy, list and roll back releases on the hosts with siporch's Ansible playbooks."""
