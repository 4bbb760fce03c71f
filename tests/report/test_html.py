"""The HTML report: opened from a file URL in a real headless Chromium (no console errors, no
network, one timeline row per job and one bar per attempt, < 5 s for 10,000 jobs), plus the
pure series behind its charts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import attrs
import pytest

from orchestrator.config.jobfile import Overrides, load_job_file
from orchestrator.events import Tagged
from orchestrator.record.log import LogRecord, read_log
from orchestrator.report.fold import fold_runs, read_report
from orchestrator.report.html import concurrency_series, render_html, tokens_per_s_series, write_html
from tests.chromium import Chromium, Page, open_report, require_chromium
from tests.helpers import make_spec, run_virtual

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    with Chromium(tmp_path, require_chromium()) as page:
        yield page


def faults_log(tmp_path: Path) -> Path:
    log = tmp_path / "faults.jsonl"
    run_virtual(load_job_file(ROOT / "jobs" / "faults.toml", Overrides(log=str(log))), keep_text=False)
    return log


def big_log(tmp_path: Path, jobs: int = 10_000) -> Path:
    """A synthetic batch on the virtual clock: short replies, some retries and failures."""
    log = tmp_path / "big.jsonl"
    spec = make_spec(
        [{"id": f"job-{i:05d}", "prompt": f"question {i}"} for i in range(jobs)],
        concurrency=64,
        seed=3,
        retry={"max_attempts": 3, "base_delay": 0.5, "max_delay": 4.0},
        sim={
            "ttft": 0.4,
            "tokens_per_s": 0,
            "reply_tokens": 1,
            "reply_tokens_max": 4,
            "latency_jitter": 0.5,
            "fault_rates": {"rate_limit": 0.04, "server_error": 0.03, "fatal": 0.002},
        },
    )
    run_virtual(attrs.evolve(spec, log=str(log), fsync="never"), keep_text=False)
    return log


def counts(log: Path) -> tuple[int, int]:
    """(jobs, attempts) straight from the log, independently of the report code."""
    jobs, attempts = set(), 0
    for record in read_log(log):
        if record.tagged is not None and record.tagged.job_id is not None:
            jobs.add(record.tagged.job_id)
            attempts += record.tagged.event.kind == "attempt_started"
    return len(jobs), attempts


def timeline(page: Page) -> dict[str, str]:
    return json.loads(
        page.evaluate("JSON.stringify(Object.assign({}, document.getElementById('timeline').dataset))")
    )


def test_faults_report_opens_offline_with_a_row_per_job_and_a_bar_per_attempt(
    tmp_path: Path, page: Page
) -> None:
    log = faults_log(tmp_path)
    html = tmp_path / "report.html"
    write_html(read_report([log]), html)

    open_report(page, html)
    page.screenshot(tmp_path / "faults.png")

    jobs, attempts = counts(log)
    assert (jobs, attempts) == (7, 14)
    assert timeline(page) == {"rows": "7", "bars": "14", "drawnBars": "14"}
    assert page.errors() == []
    assert page.requested_urls() == [html.resolve().as_uri()]  # nothing but the file itself
    assert page.evaluate("document.querySelectorAll('svg.chart').length") == 4
    assert page.evaluate("document.getElementById('summary').dataset.succeeded") == "6"


def test_hovering_a_bar_shows_job_attempt_duration_tokens_and_error(tmp_path: Path, page: Page) -> None:
    log = faults_log(tmp_path)
    html = tmp_path / "report.html"
    write_html(read_report([log]), html)
    open_report(page, html)
    row = list(read_report([log]).jobs).index("rate-limited")

    for attempt, expected in ((0, "429 rate limited"), (2, "succeeded")):
        at = json.loads(page.evaluate(f"JSON.stringify(orchestratorTimeline.barCenter({row}, {attempt}))"))
        page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": at["x"], "y": at["y"]})
        tip = page.evaluate("document.getElementById('tl-tip').innerText")
        assert f"rate-limited · attempt {attempt + 1}" in tip and expected in tip
        assert " s (" in tip and "tokens" in tip
    assert page.errors() == []


@pytest.mark.slow
def test_ten_thousand_jobs_render_and_scrolling_draws_only_the_rows_in_view(
    tmp_path: Path, page: Page
) -> None:
    log = big_log(tmp_path)
    html = tmp_path / "big.html"
    write_html(read_report([log]), html)

    open_report(page, html)
    page.screenshot(tmp_path / "big.png")

    jobs, attempts = counts(log)
    assert jobs == 10_000 and attempts > jobs
    seen = timeline(page)
    assert (seen["rows"], seen["bars"]) == (str(jobs), str(attempts))
    # Scrolling to the end redraws only the rows in view.
    drawn = page.evaluate(
        "document.getElementById('tl-scroll').scrollTop = 1e9;"
        "new Promise((done) => requestAnimationFrame(() => requestAnimationFrame("
        "() => done(Number(document.getElementById('timeline').dataset.drawnBars)))))"
    )
    assert 0 < drawn < attempts / 10
    assert page.errors() == []


def test_the_page_has_no_external_resource(tmp_path: Path) -> None:
    html = render_html(read_report([faults_log(tmp_path)]))
    for needle in ("src=", "href=", "@import", "url(", "https:"):
        assert needle not in html
    assert html.count("http://") == html.count('xmlns="http://www.w3.org/2000/svg"')


def test_concurrency_never_exceeds_the_limit_and_tokens_add_up(tmp_path: Path) -> None:
    log = big_log(tmp_path, jobs=500)
    report = read_report([log])
    end = report.runs[0].end_ts
    peak, mean, _ = concurrency_series(report, end)
    assert max(peak) == 64 and max(mean) <= 64 + 1e-9
    per_s = tokens_per_s_series(report, end, bins=100)
    spread = sum(rate * end / 100 for rate in per_s)
    output = sum(span.tokens.output for spans in report.runs[0].attempts.values() for span in spans)
    assert spread == pytest.approx(output, rel=1e-6)


@attrs.frozen
class LimiterLowered:
    """Stands in for the limiter events that the core will add (any kind containing "limiter")."""

    kind: ClassVar[str] = "limiter_lowered"
    concurrency: int


def test_limiter_events_are_marked_on_the_concurrency_chart(tmp_path: Path) -> None:
    log = faults_log(tmp_path)
    records = [(str(log), record) for record in read_log(log)]
    marker = LogRecord(0, tagged=Tagged(None, 0, 99, 0.75, LimiterLowered(concurrency=2)))  # type: ignore[arg-type]
    report = fold_runs([*records[:30], (str(log), marker), *records[30:]])

    ours = [m for m in report.runs[0].markers if m.kind == "limiter_lowered"]  # the runner may add its own
    assert [(m.kind, m.ts, m.fields) for m in ours] == [("limiter_lowered", 0.75, {"concurrency": 2})]
    html = render_html(report)
    assert f"{len(report.runs[0].markers)} limiter events" in html
    assert "limiter_lowered at 0.750s: {&quot;concurrency&quot;:2}" in html  # hover text of the mark


def test_two_runs_share_one_time_axis_with_a_row_per_job(tmp_path: Path, page: Page) -> None:
    log = tmp_path / "two.jsonl"
    first = make_spec([{"id": "a", "prompt": "a", "sim": {"faults": ["fatal"]}}, {"id": "b", "prompt": "b"}])
    run_virtual(attrs.evolve(first, log=str(log)))
    run_virtual(attrs.evolve(make_spec([{"id": "a", "prompt": "a"}]), log=str(log)))
    report = read_report([log])
    html = tmp_path / "two.html"
    write_html(report, html)

    open_report(page, html)

    assert timeline(page) == {"rows": "2", "bars": "3", "drawnBars": "3"}
    assert page.evaluate("document.body.innerText").count("run 2 starts") == 0  # only in SVG titles
    assert "run 2 starts" in html.read_text()
    assert page.errors() == []


def test_a_simulated_batch_says_so_at_the_top(tmp_path: Path) -> None:
    html = render_html(read_report([faults_log(tmp_path)]))  # jobs/faults.toml runs on the simulator
    assert "(simulated: 7 jobs ran on the simulator, answers and costs made up)" in html


def test_a_jobs_row_and_metadata_are_in_its_tooltip_data(tmp_path: Path) -> None:
    from orchestrator.report.html import timeline_data

    spec = make_spec(
        [{"id": "a", "prompt": "p", "metadata": {"gold": "<b>pos</b>"}}, {"id": "b", "prompt": "q"}]
    )
    spec = attrs.evolve(spec, log=str(tmp_path / "run.jsonl"))
    run_virtual(spec)
    data = timeline_data(read_report([tmp_path / "run.jsonl"]))
    assert data["inputs"] == ['{"metadata":{"gold":"<b>pos</b>"}}', None]  # shown with textContent


def answers(page: Page) -> dict[str, str]:
    return json.loads(
        page.evaluate("JSON.stringify(Object.assign({}, document.getElementById('answers-list').dataset))")
    )


def open_answer(page: Page, job: str) -> list[str]:
    """Click the job's row in the answers list; the texts of the parts it opens (title, text...)."""
    return json.loads(
        page.evaluate(
            "(() => { const item = [...document.querySelectorAll('#answers-list .answer')]"
            f".find((a) => a.querySelector('.answer-id').textContent === {json.dumps(job)});"
            "item.querySelector('.answer-head').click();"
            "return JSON.stringify([...item.querySelectorAll('.answer-part, .answer-text')]"
            ".map((e) => e.textContent)); })()"
        )
    )


def search_answers(page: Page, text: str) -> dict[str, str]:
    page.evaluate(
        f"(() => {{ const s = document.getElementById('answers-search'); s.value = {json.dumps(text)};"
        "s.dispatchEvent(new Event('change')); })()"
    )
    return answers(page)


def test_a_jobs_row_opens_its_prompt_answer_and_error(tmp_path: Path, page: Page) -> None:
    log = faults_log(tmp_path)
    report = read_report([log], keep_text=True)
    html = tmp_path / "report.html"
    write_html(report, html)
    open_report(page, html)

    assert answers(page) == {"found": "7", "shown": "7"}
    clean = report.runs[0].results["clean"].text
    assert clean
    assert open_answer(page, "clean") == ["prompt", "user: A job with no faults.", "answer", clean]
    parts = open_answer(page, "bad-request")
    assert parts[2:4] == ["answer", "(no answer)"] and parts[4] == "error" and "bad_request" in parts[5]
    assert page.errors() == []


def test_the_search_box_finds_jobs_by_id_and_by_text(tmp_path: Path, page: Page) -> None:
    log = tmp_path / "run.jsonl"
    spec = make_spec(
        [
            {"id": "alpha", "prompt": "about cats", "sim": {"text": "Cats purr."}},
            {"id": "beta", "prompt": "about dogs", "sim": {"text": "Dogs bark."}},
            {"id": "gamma", "prompt": "about birds", "sim": {"text": "Birds sing."}},
        ]
    )
    run_virtual(attrs.evolve(spec, log=str(log)))
    html = tmp_path / "r.html"
    write_html(read_report([log], keep_text=True), html)
    open_report(page, html)

    assert search_answers(page, "BETA")["found"] == "1"  # an id, any case
    assert search_answers(page, "purr")["found"] == "1"  # an answer
    assert search_answers(page, "about")["found"] == "3"  # the prompts
    assert search_answers(page, "nothing like it") == {"found": "0", "shown": "0"}
    assert page.evaluate("document.getElementById('answers-count').textContent") == "no job matches"
    assert page.errors() == []


def test_hostile_text_in_ids_prompts_and_answers_stays_text(tmp_path: Path, page: Page) -> None:
    log = tmp_path / "run.jsonl"
    evil = '<img src=x onerror="document.body.dataset.pwned=1"></script><b>'
    spec = make_spec([{"id": f"j{evil}", "prompt": f"p{evil}", "sim": {"text": f"a{evil}"}}])
    run_virtual(attrs.evolve(spec, log=str(log)))
    html = tmp_path / "r.html"
    write_html(read_report([log], keep_text=True), html)
    assert "<img" not in html.read_text()
    open_report(page, html)

    parts = open_answer(page, f"j{evil}")
    assert parts == ["prompt", f"user: p{evil}", "answer", f"a{evil}"]
    assert page.evaluate("document.querySelectorAll('img, #answers-list b').length") == 0
    assert page.evaluate("document.body.dataset.pwned === undefined")
    assert page.errors() == []


def test_long_texts_are_cut_with_a_note_and_the_cut_shrinks_as_jobs_grow() -> None:
    from orchestrator.report.answers import MOST, cut, text_limit

    assert text_limit(1) == MOST and text_limit(10_000) < text_limit(100) <= MOST
    assert cut("short", 10) == "short"
    assert cut("x" * 25, 10) == "x" * 10 + "\n… 15 more characters (orchestrate report LOG --job ID)"


@pytest.mark.slow
def test_ten_thousand_jobs_with_their_answers_stay_a_few_megabytes_and_searchable(
    tmp_path: Path, page: Page
) -> None:
    log = big_log(tmp_path)
    html = tmp_path / "big.html"
    write_html(read_report([log], keep_text=True), html)
    assert html.stat().st_size < 5_000_000
    open_report(page, html)

    assert answers(page) == {"found": "10000", "shown": "200"}
    assert search_answers(page, "job-09999") == {"found": "1", "shown": "1"}
    assert open_answer(page, "job-09999")[:2] == ["prompt", "user: question 9999"]
    assert page.errors() == []


def test_report_html_from_the_command_carries_the_answers(tmp_path: Path) -> None:
    from orchestrator.cli.report import main
    from orchestrator.report.answers import answers_data

    log = faults_log(tmp_path)
    html = tmp_path / "report.html"
    assert main([str(log), "--html", str(html)]) == 1  # faults.toml has a job that fails
    text = read_report([log], keep_text=True).runs[0].results["clean"].text
    assert text and json.dumps(text) in html.read_text()
    assert answers_data(read_report([log]))["answer"][0] is None  # read without texts: nothing to show


def test_clicking_a_jobs_row_on_the_timeline_opens_its_answer(tmp_path: Path, page: Page) -> None:
    log = faults_log(tmp_path)
    html = tmp_path / "report.html"
    write_html(read_report([log], keep_text=True), html)
    open_report(page, html)
    row = list(read_report([log]).jobs).index("bad-request")

    at = json.loads(page.evaluate(f"JSON.stringify(orchestratorTimeline.barCenter({row}, 0))"))
    for kind in ("mousePressed", "mouseReleased"):
        page.send(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": at["x"], "y": at["y"], "button": "left", "clickCount": 1},
        )
    opened = page.evaluate(
        "JSON.stringify([...document.querySelectorAll('.answer')]"
        ".filter((a) => a.querySelector('.answer-detail'))"
        ".map((a) => a.querySelector('.answer-id').textContent))"
    )
    assert json.loads(opened) == ["bad-request"]
    assert page.evaluate("document.getElementById('answers-search').value") == "bad-request"
    assert page.errors() == []
