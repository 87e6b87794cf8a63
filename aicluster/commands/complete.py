"""`aicluster complete INVENTORY PROMPT`: one real completion from the cluster's API, with its key."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import click

from aicluster.commands import EXIT_BAD_INPUT, spec_or_exit
from aicluster.inventory import spec_path
from aicluster.secrets import secret_path
from aicluster.vllmserve import served_name

EXIT_FAILED = 1


@click.command("complete")
@click.argument("inventory")
@click.argument("prompt")
@click.option("--max-tokens", default=16, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--timeout", default=120, show_default=True, type=click.IntRange(1, 3600), help="Seconds."
)
def complete_command(inventory: str, prompt: str, max_tokens: int, timeout: int) -> None:
    """One real completion from the cluster's API, with its key.

    The key is read from security.api_key_file; the API is the head's management address."""
    spec = spec_or_exit(inventory)
    headers = {"Content-Type": "application/json"}
    if spec.security.api_key_file:
        key_file = secret_path(str(spec_path(inventory)), spec.security.api_key_file)
        try:
            headers["Authorization"] = f"Bearer {Path(key_file).read_text().strip()}"
        except OSError as error:
            click.echo(f"{key_file}: cannot read the API key: {error.strerror}", err=True)
            sys.exit(EXIT_BAD_INPUT)
    url = f"http://{spec.head.ssh.address}:{spec.serving.api_port}/v1/completions"
    body = {"model": served_name(spec), "prompt": prompt, "max_tokens": max_tokens}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        click.echo(f"{url}: HTTP {error.code} {error.reason}", err=True)
        sys.exit(EXIT_FAILED)
    except (OSError, ValueError) as error:
        click.echo(f"{url}: {error}", err=True)
        sys.exit(EXIT_FAILED)
    usage = answer.get("usage", {})
    click.echo(f"{url} ({answer.get('model')}): {usage.get('completion_tokens')} tokens")
    click.echo(prompt + answer["choices"][0]["text"])
