"""A CLI run keeps Prefect's INFO lines off the terminal, while the run's logs (loopline's
progress lines included) reach the Prefect API at INFO."""

from __future__ import annotations

import subprocess
import sys
import time

from loopline import services

SCRIPT = """
import sys
from loopline.cli import _prefect_home
from loopline.settings import Settings

_prefect_home(Settings(data_dir=sys.argv[1]))  # what every `loopline` command does first

from prefect import flow, get_run_logger
from loopline import progress

@flow(name="chatty")
def chatty() -> None:
    get_run_logger().info("an INFO line from the flow")
    progress.phase("step", "a loopline progress line", seconds=1.0)

state = chatty(return_state=True)
print("RUN", state.state_details.flow_run_id)
"""


def test_terminal_shows_no_prefect_info_and_the_run_logs_keep_everything(prefect_server, tmp_path):
    env = {k: v for k, v in prefect_server.env.items() if not k.startswith("PREFECT_LOGGING")}
    env["LOOPLINE_PROGRESS"] = "off"  # phase lines go to the `loopline` logger only
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    terminal = done.stdout + done.stderr
    assert done.returncode == 0, terminal
    lines = [line for line in terminal.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("RUN "), terminal  # nothing but the print
    run_id = lines[0].split()[1]
    messages: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with services.PrefectHttp(prefect_server.api_url) as prefect:
            logs = prefect.post(
                "logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}
            ).json()
        messages = [log["message"] for log in logs]
        if any("a loopline progress line" in m for m in messages):
            break
        time.sleep(0.5)
    assert any("an INFO line from the flow" in m for m in messages), messages
    assert any("a loopline progress line" in m for m in messages), messages
    assert any("Finished in state Completed" in m for m in messages), messages
