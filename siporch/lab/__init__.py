"""The lab: real edge, PBX and ITSP hosts on one machine.

Network namespaces on a bridge (pyroute2), an overlay of a debootstrapped Debian sid
root per host, an sshd in each, and ``inventory/lab/`` so Ansible reaches them exactly
as it reaches production. See docs/lab.md.
"""
