"""pyinfra inventory built from multinode_ib.yaml: groups nodes, head, workers, vllm and exo.

The spec is validated here, before pyinfra connects to anything; an invalid one exits 2.
"""

from aicluster.inventory import groups_for

globals().update(groups_for(__file__))
