"""Provision an Exo cluster of Macs described by an inventory:

    pyinfra inventories/mac_studios.py deploys/exo_cluster.py

Thunderbolt networking first (Exo discovers its peers over it), then Exo itself.
"""

from roles.exo import exo
from roles.mac_network import mac_network

mac_network()
exo()
