"""End to end: the official Python MCP client drives `aitbc-flow mcp` over stdio, against the embedded
coordinator. Run by tests/mcp_e2e.rs as `python e2e.py BINARY WORKDIR`; every check prints one line,
and the first failure ends the script with exit code 1.

Four sessions, each its own server process:
  capped     --max-spend 30 --max-spend capped-wallet=2: the tools and their schemas, submit and wait
             with progress, results with the receipt verified, a bad job type, the spend cap refusing a
             call, run_plan of an example plan (and the cap refusing a plan that costs more).
  read-only  --read-only: only the tools that spend nothing, and a refused call of the others.
  slow       jobs take 60 s: a waiting submit whose call is cancelled has its job cancelled and
             refunded, which gives the payment back under the cap.
  abandoned  jobs take 60 s: the client goes away (stdin closed, then SIGTERM) while a submit waits;
             the server's log says the job was cancelled and refunded on its way out.
"""

import json
import sys
import time

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

BINARY, WORKDIR = sys.argv[1], sys.argv[2]
CHECKS = 0


class Failed(Exception):
    """A check failed (already printed)."""


def check(cond, what, detail=None):
    global CHECKS
    if not cond:
        print(f"FAILED: {what}")
        if detail is not None:
            print(json.dumps(detail, indent=2, default=str)[:4000])
        raise Failed(what)
    CHECKS += 1
    print(f"ok: {what}")


def server(*flags, log="warn"):
    return StdioServerParameters(
        command=BINARY,
        args=["mcp", "--plans-dir", WORKDIR, "--runs-dir", f"{WORKDIR}/runs", *flags],
        # Nothing of the test's environment decides the coordinator: the embedded one is started.
        env={"RUST_LOG": log, "AITBC_COORDINATOR_URL": "", "AITBC_TOKEN": ""},
        cwd=WORKDIR,
    )


async def session_of(params, body, errlog=sys.stderr):
    async with stdio_client(params, errlog=errlog) as (r, w):
        async with ClientSession(r, w, read_timeout_seconds=120) as s:
            init = await s.initialize()
            s.write_stream = w
            await body(s, init)


def content(res):
    return res.structured_content or {}


async def capped(s, init):
    check("embedded" in (init.instructions or ""), "the instructions say the coordinator is embedded")
    check("30 AITBC in total" in init.instructions, "the instructions state the spend cap")

    tools = {t.name: t for t in (await s.list_tools()).tools}
    expected = {"submit", "status", "results", "list", "cancel", "refund", "optimize", "balance",
                "validate_plan", "plan", "run_plan", "run_status", "runs_list"}
    check(set(tools) == expected, "all thirteen tools are listed", sorted(tools))
    submit = tools["submit"].input_schema
    check(submit["required"] == ["job_type", "prompt", "payment", "wallet"],
          "submit requires the skill's four fields", submit)
    check(submit["properties"]["job_type"]["enum"] ==
          ["inference", "training", "multimodal", "ollama", "streaming", "monitoring"],
          "submit's job_type is the enum of the six job types", submit["properties"]["job_type"])
    check(all(p.get("description") for p in submit["properties"].values()),
          "every submit field has a description", submit)
    check(tools["submit"].output_schema and "validation_status" in tools["submit"].output_schema["properties"],
          "submit declares the skill's output as its output schema")
    check(tools["status"].annotations.read_only_hint is True and tools["submit"].annotations.read_only_hint is False,
          "read-only hints mark the tools that spend nothing")

    # Submit and wait: progress notifications, then the completed job with its verified receipt.
    progress = []

    async def on_progress(p, total, message):
        progress.append((p, total, message))

    res = await s.call_tool("submit", {"job_type": "multimodal", "prompt": "Rate this feedback: great!",
                                       "payment": 5, "wallet": "trading-wallet", "wait": True},
                            progress_callback=on_progress)
    out = content(res)
    check(not res.is_error and out["status"] == "completed" and out["validation_status"] == "success",
          "submit with wait completes the job", out)
    values = [p for p, _, _ in progress]
    check(len(values) >= 2 and values[0] == 0 and values[-1] == 100 and values == sorted(set(values)),
          f"progress notifications rise from 0 to 100 ({values})", progress)
    check(all(t == 100 for _, t, _ in progress), "progress is out of 100")
    check(out["performance_metrics"]["receipt_verified"] is True, "the waited result's receipt is verified", out)
    job = out["job_id"]

    res = await s.call_tool("results", {"job_id": job})
    out = content(res)
    check(not res.is_error and out["performance_metrics"]["receipt_verified"] is True
          and out["job_id"] == job and out["result"],
          "results fetches the result with its receipt verified", out)

    res = await s.call_tool("status", {"job_id": job})
    check(content(res)["status"] == "completed" and content(res)["progress"] == 100, "status reads the job", content(res))

    # A bad job type: refused before anything is sent, with the suggestion.
    res = await s.call_tool("submit", {"job_type": "inferense", "prompt": "hi", "payment": 2, "wallet": "trading-wallet"})
    out = content(res)
    check(res.is_error and out["summary"] == "Invalid job type", "a bad job type is a tool error", out)
    check("Use job type `inference`" in out["recommendations"], "the refusal suggests `inference`", out)
    check(any("valid job types are inference, training" in i for i in out["issues"]), "the refusal names the valid types", out)

    # Unknown arguments are refused, not ignored.
    res = await s.call_tool("balance", {"wallet": "trading-wallet", "batch_file": "/etc/passwd"})
    check(res.is_error and "`batch_file` is not an argument of `balance`" in content(res)["summary"],
          "an argument the tool does not take is refused", content(res))

    # The spend cap: capped-wallet may pay 2 AITBC.
    res = await s.call_tool("submit", {"job_type": "inference", "prompt": "one", "payment": 1.5, "wallet": "capped-wallet"})
    check(not res.is_error, "a payment within the wallet's cap is submitted", content(res))
    res = await s.call_tool("submit", {"job_type": "inference", "prompt": "two", "payment": 1, "wallet": "capped-wallet"})
    out = content(res)
    check(res.is_error and out["summary"] == "Spend cap reached: 0.5 AITBC left to spend",
          "a payment past the wallet's cap is refused saying what is left", out)
    check(any("0.5 AITBC of the cap of 2 AITBC for wallet capped-wallet" in i for i in out["issues"]),
          "the refusal names the cap", out)
    check(out["job_id"] is None, "nothing was submitted for the refused call", out)
    res = await s.call_tool("balance", {"wallet": "capped-wallet"})
    check(float(content(res)["result"]) == 10000 - 1.5, "the refused call paid nothing", content(res))

    # Plans: the dry run with the cap's verdict, the cap refusing a plan that costs more than is left.
    res = await s.call_tool("plan", {"path": "nightly-monitoring.yaml"})
    out = content(res)
    check(not res.is_error and out["spend"]["per_wallet"] == {"ops-wallet": 1} and out["spend_cap"]["plan"]["fits"],
          "plan shows the spend per wallet and that it fits under the cap", out)
    res = await s.call_tool("run_plan", {"path": "feedback-analysis.yaml"})
    out = content(res)
    check(res.is_error and "504 AITBC from wallet trading-wallet is more than is left: 23.5 AITBC" in out["issues"][0],
          "run_plan refuses a plan whose spend passes the cap, saying what is left", out)
    res = await s.call_tool("validate_plan", {"path": "../outside.yaml"})
    check(res.is_error and "is outside the plans folder" in content(res)["summary"],
          "a plan outside the plans folder is refused", content(res))

    res = await s.call_tool("validate_plan", {"path": "nightly-monitoring.yaml", "set": {"wallet": "ops-wallet"}})
    check(not res.is_error and content(res)["valid"] is True, "validate_plan checks a plan", content(res))

    # run_plan of an example plan: progress per step, the report, then run_status and runs_list.
    progress.clear()
    res = await s.call_tool("run_plan", {"path": "nightly-monitoring.yaml"}, progress_callback=on_progress)
    report = content(res)
    check(not res.is_error and report["status"] == "succeeded", "run_plan runs the example plan", report)
    check(len(report["steps"]) == 4 and report["totals"]["spend_per_wallet"] == {"ops-wallet": 1},
          "the report has every step and what was paid", report.get("totals"))
    values = [p for p, _, _ in progress]
    check(values and values[-1] == 100 and values == sorted(set(values)),
          f"run_plan sends rising progress ({values})", progress)
    run_id = report["run_id"]
    res = await s.call_tool("run_status", {"run_id": run_id})
    check(not res.is_error and content(res)["run_id"] == run_id and content(res)["status"] == "succeeded",
          "run_status reads the run's report", content(res))
    res = await s.call_tool("runs_list", {"plan": "nightly-monitoring"})
    check([r["run_id"] for r in content(res)["runs"]] == [run_id], "runs_list lists the run", content(res))
    res = await s.call_tool("plan", {"path": "nightly-monitoring.yaml"})
    check(content(res)["spend_cap"]["left"]["total"] == 30 - 5 - 1.5 - 1,
          "the run's payment counts against the cap", content(res)["spend_cap"])


async def read_only(s, init):
    names = {t.name for t in (await s.list_tools()).tools}
    check(names == {"status", "results", "list", "balance", "validate_plan", "plan", "run_status", "runs_list"},
          "--read-only lists only the tools that spend nothing", sorted(names))
    res = await s.call_tool("submit", {"job_type": "inference", "prompt": "hi", "payment": 1, "wallet": "w"})
    check(res.is_error and "--read-only" in content(res)["summary"], "--read-only refuses submit", content(res))
    res = await s.call_tool("balance", {"wallet": "w"})
    check(not res.is_error and float(content(res)["result"]) == 10000, "--read-only still reads balances", content(res))


async def slow(s, init):
    # A waiting submit whose call is cancelled: the job is cancelled and its payment refunded.
    submitted = anyio.Event()
    job = {}

    async def on_progress(p, total, message):
        if p == 0 and message:
            job["id"] = message.split()[1]
            submitted.set()

    async with anyio.create_task_group() as tg:
        async def waiting():
            await s.call_tool("submit", {"job_type": "training", "prompt": "train it", "payment": 10,
                                         "wallet": "slow-wallet", "wait": True}, progress_callback=on_progress)
        tg.start_soon(waiting)
        with anyio.fail_after(30):
            await submitted.wait()
        tg.cancel_scope.cancel()
    check("id" in job, "the waiting submit reported its job")
    res = await s.call_tool("submit", {"job_type": "training", "prompt": "again", "payment": 10, "wallet": "slow-wallet"})
    deadline = time.monotonic() + 20
    while res.is_error and time.monotonic() < deadline:
        # The refund is asked for once the cancel is seen; until then the cap is spent.
        await anyio.sleep(0.2)
        res = await s.call_tool("submit", {"job_type": "training", "prompt": "again", "payment": 10, "wallet": "slow-wallet"})
    status = content(await s.call_tool("status", {"job_id": job["id"]}))
    check(status["status"] == "cancelled", "cancelling the call cancelled its job", status)
    check(not res.is_error, "its refund gave the payment back under the cap", content(res))
    res = await s.call_tool("balance", {"wallet": "slow-wallet"})
    check(float(content(res)["result"]) == 10000 - 10, "the cancelled job's payment was refunded", content(res))


async def abandoned(s, init):
    # The client goes away while a submit waits: the server cancels the job on its way out.
    submitted = anyio.Event()

    async def on_progress(p, total, message):
        submitted.set()

    async def waiting():
        await s.call_tool("submit", {"job_type": "training", "prompt": "left behind", "payment": 10,
                                     "wallet": "w", "wait": True}, progress_callback=on_progress)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiting)
        with anyio.fail_after(30):
            await submitted.wait()
        # Gone without a word: the server's stdin closes under the waiting call (no cancel is sent),
        # and leaving the session then sends SIGTERM, as the client does to a server that stays.
        await s.write_stream.aclose()
        raise Leave()


class Leave(Exception):
    """Leave the session at once, with a call still waiting."""


async def main():
    await session_of(server("--max-spend", "30", "--max-spend", "capped-wallet=2"), capped)
    await session_of(server("--read-only"), read_only)
    await session_of(server("--max-spend", "10", "--embedded-job-time", "60s"), slow)
    log_path = f"{WORKDIR}/abandoned.log"
    with open(log_path, "w") as log:
        try:
            await session_of(server("--embedded-job-time", "60s", log="aitbc_flow=info"), abandoned, errlog=log)
        except BaseException as e:  # the session's task groups wrap `Leave`
            if "Leave" not in repr(e):
                raise
    with open(log_path) as log:
        text = log.read()
    check("was cancelled: job CANCELED" in text and "was refunded" in text,
          "a client that goes away has its waiting job cancelled and refunded", text)
    print(f"{CHECKS} checks passed")


try:
    anyio.run(main)
except BaseException as e:  # a failed check arrives wrapped in the task groups' exception groups
    if not isinstance(e, Failed) and "Failed" not in repr(e):
        raise
    sys.exit(1)
