"""The README's worked template example runs as written, against a fresh tenant."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import sys
from pathlib import Path

from tests.conftest import create_tenant
from tests.integration.helpers import wait_for_mail

ROOT = Path(__file__).resolve().parents[2]


def _worked_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("<!-- worked-example:start -->", 1)[1].split("<!-- worked-example:end -->", 1)[0]
    (script,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return script


async def test_readme_worked_example(suite, smtp_sink) -> None:
    tenant = await create_tenant(suite)
    script = _worked_example()
    assert "ADDR=127.0.0.1:50051\n" in script
    script = script.replace("ADDR=127.0.0.1:50051\n", f"ADDR={suite.ports.addr('edge')}\n", 1)
    prelude = f'set -eo pipefail\nG={Path(sys.executable).parent / "grpcurl"}\nAUTH="authorization: Bearer {tenant.api_key}"\n'
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", prelude + script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out_bytes, err_bytes = await asyncio.wait_for(proc.communicate(), timeout=120)
    out, err = out_bytes.decode(), err_bytes.decode()
    assert proc.returncode == 0, err + out

    # Step 3: the preview, with the layout, the inlined style and the generated parts.
    assert '"subject": "Reset your password, Ada"' in out
    assert 'class=\\"foot\\" style=\\"color: #888888;font-size: 12px;\\"' in out
    assert "Choose a new password within 30 minutes: https://acme.example/r/x1" in out
    # Step 4: refused, naming the variable.
    assert "Code: InvalidArgument" in err and '"field":"template.variables.link"' in err
    # Step 5: GetMessage lists the three versions; step 6 made footer version 2.
    assert re.search(r'"name": "password-reset",\s*"version": 1', out)
    assert re.search(r'"name": "footer",\s*"version": 2', out)

    (received,) = await wait_for_mail(smtp_sink, "ada@example.com")
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["Subject"] == "Reset your password, Ada"
    text = parsed.get_body(("plain",)).get_content()
    # Built from footer version 1, the one the send was accepted with.
    assert "Acme Ltd, 1 Main St." in text and "Choose a new password within 30 minutes" in text
