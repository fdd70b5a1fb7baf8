"""Personal data in Temporal's store, with the real stack: `worker.py` (its codec server on the
audit API) and the dev server, whose state is a SQLite file we can read byte by byte.

HR drives a pair through the `temporal` CLI pointed at the codec server, exactly as the Web UI
does (`--codec-endpoint`, the HR token forwarded): clear JSON typed and read, ciphertext stored.
The lifecycle has a mentor replacement, curriculum objectives and a feedback comment; afterwards
none of the names, e-mails, objectives or comments can be found in Temporal's files, nor in the
log. Then the mentee is erased: their pair's keys are destroyed, the codec server answers an
"erased" marker for its payloads, and the outbox keeps no message to them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

import demo
from devstack.temporal import TemporalDevServer
from tests.e2e.conftest import WorkerProcess, temporal_cli, worker_env
from workflows.inputs import pair_workflow_id

TOKEN = "hr-e2e-token"


async def test_hr_types_and_reads_clear_json_while_temporal_stores_none_of_it(
        temporal_dev_server: TemporalDevServer, database_url: str, tmp_path: Path):
    server = temporal_dev_server
    tag = uuid.uuid4().hex[:8]
    task_queue = f"mentoring-pd-{tag}"
    state_dir = tmp_path / "state"
    env = worker_env(DATABASE_URL=database_url, TEMPORAL_ADDRESS=server.address, TEMPORAL_TASK_QUEUE=task_queue,
                     STATE_DIR=str(state_dir), MENTORING_API_TOKENS=json.dumps({TOKEN: "hr"}),
                     DATA_KEY_CACHE_SECONDS="0.2")
    codec_url = f"http://127.0.0.1:{env['API_PORT']}/codec"
    through_codec = (codec_url, TOKEN)

    # Fictional people whose every name, address and word we can look for afterwards.
    start = demo.demo_input(f"pd-{tag}", datetime.now(UTC)).model_dump(mode="json")
    start["mentor"].update(display_name="Quillon Varnesh", email=f"quillon.varnesh.{tag}@example.com")
    start["mentee"].update(display_name="Ombretta Sulkowitz", email=f"ombretta.sulkowitz.{tag}@example.com")
    start["nominated_by"].update(display_name="Haldor Pivensky", email=f"haldor.pivensky.{tag}@example.com")
    new_mentor = {"employee_id": "PD2002", "display_name": "Ysolde Brackmann",
                  "email": f"ysolde.brackmann.{tag}@example.com", "time_zone": "Europe/Paris"}
    objective = "help Ombretta answer her grandson Mirabeau"
    comment = "Ombretta was anxious about Pivensky's remarks"
    personal = ["Quillon", "Varnesh", "Ombretta", "Sulkowitz", "Haldor", "Pivensky", "Ysolde", "Brackmann",
                "Mirabeau", "anxious about", *(p["email"] for p in (start["mentor"], start["mentee"],
                                                                     start["nominated_by"], new_mentor))]
    mentor, mentee, hr = (start[k]["employee_id"] for k in ("mentor", "mentee", "nominated_by"))
    workflow_id = pair_workflow_id(start["programme_id"], mentor, mentee)
    input_file = tmp_path / "pair.json"
    input_file.write_text(json.dumps(start))

    async def cli(*args: str, codec: tuple[str, str] | None = through_codec) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(temporal_cli, server, *args, codec=codec)

    async def update(name: str, **payload: Any) -> dict[str, Any]:
        done = await cli("workflow", "update", "execute", "--workflow-id", workflow_id, "--name", name,
                         "--input", json.dumps(payload))
        assert done.returncode == 0, f"{name}: {done.stderr}{done.stdout}"
        return json.loads(done.stdout)["result"]

    async def state(codec: tuple[str, str] | None = through_codec) -> Any:
        done = await cli("workflow", "query", "--workflow-id", workflow_id, "--name", "state", codec=codec)
        return json.loads(done.stdout)["queryResult"][0] if done.returncode == 0 else None

    worker = WorkerProcess(env)
    conn = await asyncpg.connect(database_url)
    try:
        worker.start()
        started = await cli("workflow", "start", "--type", "MentoringPair", "--task-queue", task_queue,
                            "--workflow-id", workflow_id, "--input-file", str(input_file))
        assert started.returncode == 0, started.stderr
        for _ in range(100):
            if (shown := await state()) and shown["version"] >= 2:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the pair was never nominated")

        await update("replace_mentor", recorded_by=hr, new_mentor=new_mentor, reason="mentor_unavailable")
        await update("confirm_motivation", recorded_by=new_mentor["employee_id"])
        await update("accept_invitation", recorded_by=mentee, channel="email")
        await update("agree_curriculum", recorded_by=new_mentor["employee_id"], topics=[start["topics"][0]],
                     objectives=[objective])
        for module in start["training_modules"]:
            await update("complete_training_module", recorded_by=new_mentor["employee_id"], module=module)
        await update("onboard_mentee", recorded_by=hr)
        await update("sign_off_mentor", recorded_by=hr)
        starts = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)
        await update("propose_session", recorded_by=hr, starts_at=starts.isoformat(), duration_minutes=60,
                     topics=[start["topics"][0]])
        await update("confirm_session", recorded_by=hr, session_no=1)
        await asyncio.sleep(max((starts - datetime.now(UTC)).total_seconds(), 0) + 0.5)
        await update("record_session_held", recorded_by=hr, session_no=1, topics_covered=[start["topics"][0]])
        await update("give_feedback", recorded_by=mentee, session_no=1, by_role="mentee", rating=5,
                     engaging=True, comment=comment)

        # HR reads clear JSON through the codec server; without it, only ciphertext comes back.
        shown = await state()
        assert shown["mentor_id"] == new_mentor["employee_id"] and shown["stage"] == "sessions"
        raw = await cli("workflow", "query", "--workflow-id", workflow_id, "--name", "state", codec=None)
        assert raw.returncode == 0 and "mentor_id" not in raw.stdout
        assert base64.b64encode(b"binary/encrypted").decode() in raw.stdout

        # Temporal's store: our workflow and its update names are there in clear (the scan reads
        # the right bytes), and none of the personal data.
        store = b"".join(path.read_bytes() for path in server.db_file.parent.glob(server.db_file.name + "*"))
        assert workflow_id.encode() in store and b"give_feedback" in store and b"replace_mentor" in store
        found = [text for text in personal if text.encode() in store]
        assert not found, f"personal data in Temporal's store: {found}"
        # Nor in the log.
        log = "".join(await conn.fetchval("SELECT string_agg(payload::text || metadata::text, '') FROM events"))
        assert not [text for text in personal if text in log]

        # Erasure: their pair is withdrawn and closes, its keys are destroyed.
        erase = await asyncio.to_thread(subprocess.run, [
            str(Path(sys.executable).parent / "mentoring"), "people", "erase", mentee, "--by", hr,
            "--outbox", str(state_dir / "outbox")], env=env, capture_output=True, text=True, timeout=120)
        assert erase.returncode == 0, erase.stdout + erase.stderr
        assert f"{workflow_id}: withdrawn" in erase.stdout
        assert "the keys of 1 closed workflow(s) holding their data destroyed" in erase.stdout
        await asyncio.sleep(0.5)  # the worker's key cache (DATA_KEY_CACHE_SECONDS)

        history = await cli("workflow", "show", "--workflow-id", workflow_id, codec=None)
        first = json.loads(history.stdout)["events"][0]["workflowExecutionStartedEventAttributes"]["input"]
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{codec_url}/decode", json=first,
                                     headers={"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default"})
        assert answer.status_code == 200, answer.text
        [marker] = answer.json()["payloads"]
        assert "personal data erased on" in json.loads(base64.b64decode(marker["data"]))["erased"]
        to_them = [p for p in (state_dir / "outbox").glob("*.eml") if start["mentee"]["email"] in p.read_text()]
        assert not to_them, "the outbox kept messages to the erased person"
        assert worker.interrupt() == 0, "\n".join(worker.lines[-30:])
    finally:
        worker.kill()
        await conn.close()
        await asyncio.to_thread(temporal_cli, server, "workflow", "terminate", "--workflow-id", workflow_id,
                                "--reason", "end of test")
