"""Provision a vLLM cluster described by an inventory:

    pyinfra inventories/homelab.py deploys/vllm_cluster.py

Roles run in dependency order; each reads the spec the inventory was built from.
"""

from roles.base import base
from roles.fabric import fabric
from roles.firewall import firewall
from roles.nccl import nccl
from roles.nvidia_driver import nvidia_driver
from roles.preflight import preflight
from roles.python_runtime import python_runtime
from roles.ray import ray
from roles.vllm import vllm

preflight()
base()
nvidia_driver()
fabric()
nccl()
python_runtime()
ray()
vllm()
firewall()
