"""Only the NVIDIA driver, e.g. first on new GPU nodes (then reboot), or after a GPU swap:

    pyinfra inventories/homelab.py deploys/nvidia_driver.py

deploys/vllm_cluster.py runs the same role in its place; this one touches nothing else.
"""

from roles.nvidia_driver import nvidia_driver

nvidia_driver()
