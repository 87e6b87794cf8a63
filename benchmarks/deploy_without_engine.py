"""What benchmarks/converge.py converges: deploys/vllm_cluster.py without the engine (no Python
runtime, Ray or vLLM), so its figures are aicluster's own cost at each cluster size."""

from roles.base import base
from roles.fabric import fabric
from roles.firewall import firewall
from roles.nccl import nccl
from roles.nvidia_driver import nvidia_driver
from roles.preflight import preflight

preflight()
base()
nvidia_driver()
fabric()
nccl()
firewall()
