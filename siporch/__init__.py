"""siporch: SIP trunks on Kamailio, Asterisk and rtpengine."""

__version__ = "0.1.0"
