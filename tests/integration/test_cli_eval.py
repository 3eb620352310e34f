"""`rag-app eval` on a tiny BEIR dataset (English and Chinese records) built here: ingestion
into a new knowledge base of the embedded default, figures per retrieval mode (table and JSON),
reuse of the base with --knowledge, a robot's reranker, and a missing dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from rag_app.context import AppContext
from rag_app.db.models import ApiKey, Document, Knowledge, Llm, Robot, RobotKnowledge
from rag_app.settings import Settings
from tests.integration import test_cli
from tests.integration.test_cli_ingest import invoke
from tests.openai_server import DEFAULT_API_KEY, OpenAIServer

env = test_cli.env  # the fixture, for pytest to find here

ENGLISH = {
    "en01": "Annual leave. Employees receive twenty days of paid vacation every calendar year.",
    "en02": "Expense claims. Travel costs are reimbursed within thirty days of a complete claim.",
    "en03": "Laptop security. Every laptop uses full disk encryption and locks after five minutes.",
    "en04": "Parental leave. New parents may take sixteen weeks of paid leave after a birth.",
    "en05": "Remote work. Staff may work from home up to three days a week with approval.",
    "en06": "Office hours. The office opens at eight in the morning and closes at six.",
    "en07": "Password policy. Passwords must have twelve characters and change every year.",
    "en08": "Health insurance. The company pays the full premium of the basic health plan.",
    "en09": "Training budget. Each employee may spend one thousand euros a year on courses.",
    "en10": "Company car. Managers may lease an electric car through the mobility program.",
    "en11": "Sick days. A doctor's note is needed after three consecutive days of illness.",
    "en12": "Pension plan. The employer matches contributions up to five percent of salary.",
    "en13": "Visitor badges. Guests sign in at reception and wear a badge at all times.",
    "en14": "Coffee machine. The kitchen coffee machine is descaled every Friday afternoon.",
    "en15": "Bicycle parking. Covered bicycle racks are behind the north entrance.",
}
CHINESE = {
    "zh01": "活期存款利率。本行活期存款年利率为百分之零点二五，按季结息。",
    "zh02": "信用卡年费。普通信用卡首年免年费，刷卡满六次免次年年费。",
    "zh03": "个人住房贷款。申请住房贷款需要身份证明、收入证明和购房合同。",
    "zh04": "定期存款。三年期定期存款年利率为百分之二点七五，到期自动转存。",
    "zh05": "外汇兑换。柜台办理外汇兑换每人每年额度为五万美元。",
    "zh06": "网上银行。首次登录网上银行需要使用短信验证码激活。",
    "zh07": "挂失补卡。银行卡丢失后应立即致电客服挂失并到网点补卡。",
    "zh08": "理财产品。理财产品不保本，购买前需要完成风险评估问卷。",
    "zh09": "汽车贷款。汽车贷款首付比例不低于百分之二十，期限最长五年。",
    "zh10": "助学贷款。国家助学贷款在校期间免息，毕业后六年内还清。",
    "zh11": "保险箱租赁。网点保险箱按年收费，小号每年三百元。",
    "zh12": "转账限额。手机银行单笔转账限额为五万元，每日二十万元。",
    "zh13": "营业时间。网点周一至周五营业，周末仅部分网点开放。",
    "zh14": "支票使用。支票的提示付款期限为自出票日起十日。",
    "zh15": "账户年费。小额账户管理费已于去年全面取消。",
}
QUERIES = {
    # English: paraphrases, few words shared with their documents.
    "q01": ("How much holiday time do workers have?", ["en01"]),
    "q02": ("When is money for business trips refunded?", ["en02"]),
    "q03": ("Is the hard drive of a notebook computer protected?", ["en03"]),
    "q04": ("Time off for mothers and fathers after a baby arrives", ["en04"]),
    "q05": ("Is working remotely allowed?", ["en05"]),
    "q06": ("What are the rules for login secrets?", ["en07"]),
    "q07": ("Who covers the medical cover costs?", ["en08"]),
    "q08": ("Budget for learning and education", ["en09"]),
    "q09": ("Illness: when is a medical certificate required?", ["en11"]),
    "q10": ("Retirement savings contributions", ["en12"]),
    # Chinese: sharing words with their documents.
    "q11": ("活期存款的利率是多少", ["zh01"]),
    "q12": ("信用卡年费怎么免", ["zh02"]),
    "q13": ("住房贷款需要什么材料", ["zh03"]),
    "q14": ("定期存款利率", ["zh04", "zh01"]),
    "q15": ("外汇兑换额度", ["zh05"]),
    "q16": ("银行卡丢失怎么办", ["zh07"]),
    "q17": ("理财产品保本吗", ["zh08"]),
    "q18": ("汽车贷款首付比例", ["zh09"]),
    "q19": ("手机银行转账限额", ["zh12"]),
    "q20": ("支票提示付款期限", ["zh14"]),
}
MODES = ("vector", "keyword", "hybrid")
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def write_dataset(folder: Path) -> Path:
    """A BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv (with its header line)."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as corpus:
        for doc_id, text in {**ENGLISH, **CHINESE}.items():
            title, _, body = text.partition("。" if doc_id.startswith("zh") else ". ")
            record = {"_id": doc_id, "title": title, "text": body}
            corpus.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as queries:
        queries.write(json.dumps({"_id": "q00", "text": "a query without judgements"}) + "\n")
        for query_id, (text, _) in QUERIES.items():
            queries.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t1" for q, (_, relevant) in QUERIES.items() for d in relevant]
    lines.append("q01\ten14\t0")  # judged not relevant
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def cli_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("RAG_REDIS__URL", raising=False)
    return env


def figures(stdout: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(stdout)
    for mode, values in report["modes"].items():
        for metric in METRICS:
            assert 0.0 <= values[metric] <= 1.0, (mode, metric, values)
        assert values["recall@100"] >= values["recall@10"]
        assert values["mean_latency_ms"] > 0
    return report


async def knowledge_documents(kb_id: int) -> dict[str, str]:
    ctx = AppContext.create(Settings())
    try:
        async with ctx.sessionmaker() as session:
            rows = await session.exec(
                select(Document.file_name, Document.status).where(
                    col(Document.knowledge_id) == kb_id
                )
            )
            return dict(rows.all())
    finally:
        await ctx.close()


async def test_eval_ingests_the_corpus_then_reuses_the_base(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    dataset = write_dataset(tmp_path / "tiny")
    result = await invoke("eval", "--dataset", str(dataset), "--json")
    assert result.exit_code == 0, result.output
    assert "ingesting" in result.stderr  # the progress bar and the note go to stderr
    report = figures(result.stdout)  # stdout is the JSON alone
    assert report["queries"] == 20  # q00 has no judgements
    assert report["documents"] == 30
    assert report["relevant_documents_missing"] == 0
    assert set(report["modes"]) == set(MODES)
    assert report["reranker"] is None
    assert any("no reranker" in note for note in report["notes"])
    assert report["library"].startswith("ranx ")
    modes = report["modes"]
    # Each leg misses what the other finds: the vector leg the Chinese queries (the packaged
    # model is English-only), the keyword leg the English paraphrases. Fused, hybrid finds at
    # least what either finds. (Its nDCG and MRR are not above the better leg's here: RRF gives
    # the leg that ranks at random as much say as the one that knows.)
    assert modes["hybrid"]["recall@10"] >= modes["vector"]["recall@10"]
    assert modes["hybrid"]["recall@10"] >= modes["keyword"]["recall@10"]
    assert modes["hybrid"]["recall@10"] >= 0.9
    assert min(modes["vector"]["recall@10"], modes["keyword"]["recall@10"]) < 1.0

    kb_id = report["knowledge_id"]
    names = await knowledge_documents(kb_id)
    assert names == {f"{doc_id}.txt": "completed" for doc_id in {**ENGLISH, **CHINESE}}

    table = await invoke("eval", "--dataset", str(dataset), "--knowledge", str(kb_id))
    assert table.exit_code == 0, table.output
    assert "ingesting" not in table.output
    lines = table.stdout.splitlines()
    header = next(line for line in lines if line.startswith("mode"))
    assert header.split() == ["mode", "nDCG@10", "Recall@10", "Recall@100", "MRR@10", "ms/query"]
    cells = [line.split() for line in lines[lines.index(header) + 1 :]]
    rows = {row[0]: row[1:] for row in cells if len(row) == 6}
    for mode in MODES:
        assert [float(v) for v in rows[mode][:4]] == pytest.approx(
            [modes[mode][m] for m in METRICS], abs=1e-4
        )
    assert rows["hybrid+rerank"][:4] == ["-", "-", "-", "-"]
    assert "hybrid+rerank: no reranker" in table.stdout
    assert f"base {kb_id}, 30 documents" in table.stdout

    limited = await invoke(
        "eval", "--dataset", str(dataset), "--knowledge", str(kb_id), "--limit", "5", "--json"
    )
    assert limited.exit_code == 0, limited.output
    assert json.loads(limited.stdout)["queries"] == 5

    # Only the Chinese judgements, from a file of one's own.
    qrels = tmp_path / "chinese.tsv"
    qrels.write_text(
        "".join(f"{q}\t{d}\t1\n" for q, (_, ds) in QUERIES.items() for d in ds if d[:2] == "zh")
    )
    chinese = await invoke(
        "eval", "--dataset", str(dataset), "--knowledge", str(kb_id), "--qrels", str(qrels),
        "--json",
    )  # fmt: skip
    assert chinese.exit_code == 0, chinese.output
    by_mode = figures(chinese.stdout)
    assert by_mode["queries"] == 10
    assert by_mode["modes"]["keyword"]["ndcg@10"] > by_mode["modes"]["vector"]["ndcg@10"]


async def test_a_robot_with_a_reranker_adds_a_row(
    cli_env: dict[str, str], tmp_path: Path, openai_server: OpenAIServer
) -> None:
    dataset = write_dataset(tmp_path / "tiny")
    first = await invoke("eval", "--dataset", str(dataset), "--limit", "3", "--json")
    assert first.exit_code == 0, first.output
    kb_id = json.loads(first.stdout)["knowledge_id"]

    ctx = AppContext.create(Settings())
    try:
        async with ctx.sessionmaker() as session:
            rerank = Llm(
                name="test rerank",
                model_type="rerank",
                provider="openai-compatible",
                model_name="test-rerank",
                base_url=openai_server.base_url,
            )
            session.add(rerank)
            await session.flush()
            encrypted = ctx.secret_box.encrypt(DEFAULT_API_KEY)
            session.add(
                ApiKey(llm_id=rerank.id, alias="main", api_key_encrypted=encrypted, key_mask="*")
            )
            knowledge = await session.get(Knowledge, kb_id)
            assert knowledge is not None
            robot = Robot(
                user_id=knowledge.user_id,
                name="reranking",
                enable_rerank=True,
                rerank_llm_id=rerank.id,
            )
            session.add(robot)
            await session.flush()
            session.add(RobotKnowledge(robot_id=robot.id or 0, knowledge_id=kb_id))
            await session.commit()
            robot_id = robot.id
    finally:
        await ctx.close()

    result = await invoke(
        "eval", "--dataset", str(dataset), "--knowledge", str(kb_id), "--limit", "3", "--json"
    )
    assert result.exit_code == 0, result.output
    report = figures(result.stdout)
    assert set(report["modes"]) == {*MODES, "hybrid+rerank"}
    assert report["reranker"] == "test-rerank"
    assert f"robot {robot_id} 'reranking'" in report["settings"]
    assert openai_server.requests_to("/rerank")


async def test_a_missing_dataset_is_a_clear_error(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = await invoke("eval", "--dataset", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1
    assert "dataset" in missing.output
    assert "not found" in missing.output
    assert "Traceback" not in missing.output

    partial = tmp_path / "partial"
    (partial / "qrels").mkdir(parents=True)
    (partial / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (partial / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    no_corpus = await invoke("eval", "--dataset", str(partial))
    assert no_corpus.exit_code == 1
    assert "corpus.jsonl not found" in no_corpus.output

    no_qrels = await invoke("eval", "--dataset", str(partial), "--qrels", str(tmp_path / "x.tsv"))
    assert no_qrels.exit_code == 1
    assert "x.tsv not found" in no_qrels.output

    unknown = await invoke("eval", "--dataset", str(partial), "--knowledge", "424242")
    assert unknown.exit_code == 1
    assert "knowledge base 424242 not found" in unknown.output
