"""read_document on real files of every accepted format, built with the real libraries:
text and metadata come out right, and bad input raises the right error with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.core.schema import Document, MetadataMode

from indexes.errors import DocumentUnreadable, IndexesError, NoTextFound, UnsupportedFileType
from indexes.readers import read_document
from indexes.readers.encoding import decode_text
from indexes.readers.md_unescape import unescape_markdown
from tests import fixtures_docs as docs

ROOT = Path(__file__).resolve().parents[2]


def _paths(documents: list[Document]) -> list[str | None]:
    return [doc.metadata.get("heading_path") for doc in documents]


def _all_text(documents: list[Document]) -> str:
    return "\n".join(doc.text for doc in documents)


# --------------------------------------------------------------------------------- metadata


def test_metadata_is_small_json_and_positions_are_hidden_from_models() -> None:
    documents = read_document(docs.text_pdf(), "年报.pdf")
    for doc in documents:
        assert json.loads(json.dumps(doc.metadata, ensure_ascii=False)) == doc.metadata
        llm_text = doc.get_content(MetadataMode.LLM)
        embed_text = doc.get_content(MetadataMode.EMBED)
        for seen in (llm_text, embed_text):
            assert "file_name: 年报.pdf" in seen
            assert "page:" not in seen
        assert doc.metadata["page"] >= 1
    slides = read_document(docs.pptx_bytes(), "deck.pptx")
    assert "slide:" not in slides[0].get_content(MetadataMode.LLM)
    assert "heading_path: 产品介绍" in slides[0].get_content(MetadataMode.LLM)
    sheets = read_document(docs.xlsx_bytes(), "book.xlsx")
    llm_text = sheets[0].get_content(MetadataMode.LLM)
    assert "sheet: 员工信息" in llm_text
    assert "row_start" not in llm_text
    assert "row_end" not in llm_text


# -------------------------------------------------------------------------------------- PDF


def test_pdf_one_document_per_page() -> None:
    documents = read_document(docs.text_pdf(), "report.pdf")
    assert [doc.metadata["page"] for doc in documents] == [1, 2, 3]
    assert all(doc.metadata["file_name"] == "report.pdf" for doc in documents)
    assert documents[0].text.startswith("Annual report 2024")
    assert "Revenue grew by 12 percent (see page 3)." in documents[0].text
    assert "Suzhou" in documents[1].text
    assert "steady growth" in documents[2].text


def test_long_pdf_keeps_page_numbers_and_skips_empty_pages() -> None:
    pages = [[f"Marker {n}"] if n % 10 else [] for n in range(1, 61)]
    documents = read_document(docs.pdf_with_pages(pages), "long.pdf")
    assert len(documents) == 54  # pages 10, 20, ... 60 have no text
    for doc in documents:
        assert doc.text == f"Marker {doc.metadata['page']}"


def test_scanned_pdf_has_no_text_layer() -> None:
    with pytest.raises(NoTextFound) as info:
        read_document(docs.scanned_pdf(), "扫描件.pdf")
    message = str(info.value)
    assert message.startswith("扫描件.pdf contains no text layer")
    assert "scanned" in message
    assert "OCR is not supported" in message


def test_corrupt_pdf() -> None:
    with pytest.raises(DocumentUnreadable) as info:
        read_document(docs.corrupt_pdf(), "broken.pdf")
    message = str(info.value)
    assert message.startswith("broken.pdf could not be read")
    assert "Traceback" not in message
    assert "\n" not in message


def test_password_protected_pdf() -> None:
    with pytest.raises(DocumentUnreadable, match="password-protected"):
        read_document(docs.encrypted_pdf("secret", "owner"), "locked.pdf")


def test_pdf_with_only_an_owner_password_opens() -> None:
    documents = read_document(docs.encrypted_pdf("", "owner"), "restricted.pdf")
    assert [doc.metadata["page"] for doc in documents] == [1, 2, 3]
    assert "Annual report" in documents[0].text


def test_executable_named_pdf() -> None:
    with pytest.raises(UnsupportedFileType, match=r"setup\.pdf is not a PDF.*executable"):
        read_document(docs.windows_executable(), "setup.pdf")


# ------------------------------------------------------------------------------------- DOCX


def test_docx_sections_follow_headings() -> None:
    documents = read_document(docs.docx_bytes(), "员工手册.docx")
    assert _paths(documents) == [
        None,
        "第一章 总则 > 第一条 目的",
        "第一章 总则 > 第二条 适用范围",
        "第二章 考勤 > 第三条 工作时间",  # heading style named "标题 2"
        "附录 A",  # outline level on the paragraph itself
    ]
    assert documents[0].text == "员工手册\n\n前言：本手册适用于全体员工。"
    assert documents[1].text == "第一条 目的\n\n为了规范公司管理，制定本手册。"
    assert documents[4].text == "附录 A\n\n附录内容：联系人事部。"
    assert all(doc.metadata["file_name"] == "员工手册.docx" for doc in documents)


def test_docx_tables_become_markdown_in_body_order() -> None:
    section = read_document(docs.docx_bytes(), "h.docx")[2].text
    table = (
        "| 假期类型 | 天数 | 说明 |\n"
        "| --- | --- | --- |\n"
        "| 年假 | 5 | 工作满一年 |\n"
        "| 病假 | 10 | 需提供证明 \\| 医院 |"
    )
    assert (
        section
        == f"第二条 适用范围\n\n本手册适用于公司全体员工。\n\n{table}\n\n以上假期需提前申请。"
    )


def test_broken_docx_parts_are_unreadable_not_a_crash() -> None:
    with pytest.raises(DocumentUnreadable) as info:
        read_document(docs.broken_docx(), "broken.docx")
    assert str(info.value).startswith("broken.docx could not be read: ")
    assert "Traceback" not in str(info.value)


# ------------------------------------------------------------------------------------- XLSX


def test_xlsx_one_document_per_sheet_with_header_rows() -> None:
    documents = read_document(docs.xlsx_bytes(), "工资表.xlsx")
    assert [doc.metadata["sheet"] for doc in documents] == ["员工信息", "Summary"]
    staff, summary = documents
    assert staff.text.splitlines() == [
        "姓名: 张三; 部门: 研发部; 入职日期: 2020-03-01; 工资: 15000",
        "姓名: 李四; 部门: 市场部; 入职日期: 2021-07-15 09:30:00; 工资: 12000.5",
        "姓名: 王五; 工资: 9000",
    ]
    # Headers are on row 2 (row 1 is blank), so the data is rows 3-5.
    assert (staff.metadata["row_start"], staff.metadata["row_end"]) == (3, 5)
    assert summary.text == "Metric: Headcount; Value: 3\nMetric: Active; Value: TRUE"


def test_big_sheet_is_split_into_row_blocks() -> None:
    documents = read_document(docs.big_xlsx(450), "big.xlsx")
    ranges = [(doc.metadata["row_start"], doc.metadata["row_end"]) for doc in documents]
    assert ranges == [(2, 201), (202, 401), (402, 451)]
    assert all(doc.metadata["sheet"] == "数据" for doc in documents)
    assert documents[0].text.splitlines()[0] == "编号: 1; 名称: 项目1"
    assert documents[2].text.splitlines()[-1] == "编号: 450; 名称: 项目450"


# ------------------------------------------------------------------------------------- PPTX


def test_pptx_one_document_per_slide_with_notes() -> None:
    documents = read_document(docs.pptx_bytes(), "介绍.pptx")
    assert [doc.metadata["slide"] for doc in documents] == [1, 3]  # slide 2 is empty
    first, third = documents
    assert first.text == "产品介绍\n\n我们的产品支持中文检索\n\nNotes: 强调检索速度"
    assert first.metadata["heading_path"] == "产品介绍"
    assert third.text == (
        "Pricing 价格\n\n| 方案 | 价格 |\n| --- | --- |\n| 标准版 | 999 元 |\n\n"
        "Notes: Mention the discount"
    )


# ------------------------------------------------------------------------------------- HTML


@pytest.mark.parametrize("charset", ["utf-8", "gbk"])
def test_html_main_text_by_heading(charset: str) -> None:
    documents = read_document(docs.html_bytes(charset), "手册.html")
    assert _paths(documents) == [
        "员工手册",
        "员工手册 > 第一章 总则",
        "员工手册 > 第一章 总则 > 第一条 目的",
        "员工手册 > 第二章 考勤",
    ]
    text = _all_text(documents)
    for noise in docs.HTML_NOISE:
        assert noise not in text
    assert documents[1].text == "## 第一章 总则\n\n为了规范管理，制定本手册。"
    assert "- 公平\n- 透明" in documents[2].text
    assert "| 假期 | 天数 |\n| --- | --- |\n| 年假 | 5 |" in documents[2].text
    assert "上班 09:00\n下班 18:00" in documents[3].text  # <pre> keeps its lines


def test_html_article_with_class_marked_noise() -> None:
    documents = read_document(docs.cms_article_html(), "年假.htm")
    text = _all_text(documents)
    assert [phrase for phrase in docs.CMS_CONTENT if phrase not in text] == []
    assert [phrase for phrase in docs.CMS_NOISE if phrase in text] == []
    assert _paths(documents) == [
        "如何申请年假",
        "如何申请年假 > 申请流程",
        "如何申请年假 > 年假天数",
        "如何申请年假 > 注意事项",
    ]


def test_html_charset_from_meta_or_detection() -> None:
    page = "<html><head><meta http-equiv='Content-Type' content='text/html; charset=gb2312'>"
    page += "</head><body><p>中文网页内容，使用国标编码。</p></body></html>"
    [doc] = read_document(page.encode("gb2312"), "旧网页.html")
    assert doc.text == "中文网页内容，使用国标编码。"
    # No declaration at all: detected.
    bare = "<p>没有声明编码的网页，内容是中文。</p>".encode("gbk")
    assert read_document(bare, "bare.html")[0].text == "没有声明编码的网页，内容是中文。"
    # Mislabelled: declares GBK but is UTF-8.
    wrong = "<meta charset='gbk'><p>实际是 UTF-8 编码。</p>".encode()
    assert read_document(wrong, "wrong.html")[0].text == "实际是 UTF-8 编码。"


_LONG = "This sentence is here so that the paragraph counts as real content for the extractor. "
_ESCAPES_PAGE = f"""<html><head><title>rag_app setup</title></head><body>
<nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
<article>
<h1>Configuring rag_app</h1>
<p>{_LONG}Set RAG_DATA_DIR (or <em>data_dir</em> in my_config.yaml); 2 * 3 = 6 and \
a_b_c stay as written, [optional] brackets, a &lt;placeholder&gt; and `ticks` too.</p>
<h2>Windows 路径 [beta]</h2>
<p>{_LONG}On Windows the folder is C:\\Users\\rag_app\\data, a share is \\\\server\\share_1 \
and C:\\_temp\\[x] keeps its backslashes. <strong>重要</strong>：先设置 RAG_DATA_DIR。</p>
<p>中文段落：配置文件 my_file_名称.yaml 位于数据目录，数据库连接串写在 RAG_DB__URL 中。{_LONG}</p>
<p>1. is where a paragraph starts with a number, and the next one starts with a hash. {_LONG}</p>
<p># not a heading but a paragraph. {_LONG}</p>
<pre><code>set RAG_DATA_DIR=C:\\data\\x_y
echo \\_kept *as is*</code></pre>
</article></body></html>"""


def test_html_text_has_no_markdown_escapes() -> None:
    documents = read_document(_ESCAPES_PAGE.encode(), "setup.html")
    text = _all_text(documents)
    # Bold markers only come from trafilatura's Markdown, so this page took that branch.
    assert "**重要**" in text
    assert _paths(documents) == [
        "Configuring rag_app",
        "Configuring rag_app > Windows 路径 [beta]",
    ]
    assert documents[0].text.startswith("# Configuring rag_app\n\n")
    for written in (
        "Set RAG_DATA_DIR (or *data_dir* in my_config.yaml); 2 * 3 = 6 and a_b_c",
        "[optional] brackets, a <placeholder> and `ticks` too.",
        "## Windows 路径 [beta]",
        r"C:\Users\rag_app\data, a share is \\server\share_1",
        r"and C:\_temp\[x] keeps its backslashes.",
        "中文段落：配置文件 my_file_名称.yaml 位于数据目录，数据库连接串写在 RAG_DB__URL 中。",
        "\n1. is where a paragraph starts",
        "\n# not a heading but a paragraph.",
        # Code is verbatim in trafilatura's output: nothing to undo there.
        "set RAG_DATA_DIR=C:\\data\\x_y\necho \\_kept *as is*",
    ):
        assert written in text, written
    prose = text.split("```")[0]
    for escape in ("\\_", "\\*", "\\[", "\\]", "\\<", "\\`", "\\#", "1\\."):
        assert escape not in prose.replace(r"C:\_temp\[x]", ""), escape


@pytest.mark.parametrize(
    ("markdown", "plain"),
    [
        (
            r"RAG\_DATA\_DIR and \*x\* and \[y\] \<z> \`t\` \~s\~",
            "RAG_DATA_DIR and *x* and [y] <z> `t` ~s~",
        ),
        # trafilatura turns n backslashes before a special character into 2n + 1.
        (r"C:\\\_temp and \\\\\_", r"C:\_temp and \\_"),
        # Backslashes it never adds stay: paths, a lone even run, other punctuation.
        (
            r"C:\Users\x and \\server\share and a\\_b and a\.b and 50\%",
            r"C:\Users\x and \\server\share and a\\_b and a\.b and 50\%",
        ),
        (
            "`a\\_b` and ``c`\\*d`` stay, e\\_f does not",
            "`a\\_b` and ``c`\\*d`` stay, e_f does not",
        ),
        (
            "```\nx\\_y\n\\# z\n```\n\\# heading-like text",
            "```\nx\\_y\n\\# z\n```\n# heading-like text",
        ),
        ("\\# a\n- \\- b\n- 2\\. c\n3\\) d\n\\> e\n\\+ f", "# a\n- - b\n- 2. c\n3) d\n> e\n+ f"),
        # Mid-line, these were not escaped by trafilatura: a table cell's pipe is structure.
        ("a \\# b 2\\. c | x\\|y |", "a \\# b 2\\. c | x\\|y |"),
        ("`code` \\# after code", "`code` \\# after code"),
    ],
)
def test_unescape_markdown_undoes_only_trafilaturas_escapes(markdown: str, plain: str) -> None:
    assert unescape_markdown(markdown) == plain


# --------------------------------------------------------------------------------- Markdown


def test_markdown_sections_and_code_blocks() -> None:
    documents = read_document(docs.markdown_bytes(), "指南.md")
    assert _paths(documents) == [
        None,
        "安装指南",
        "安装指南 > 第一步 下载",
        "安装指南 > 第二步 配置",
        "Setext 标题",
        "Setext 标题 > 子节",
    ]
    assert documents[0].text == "---\ntitle: 安装指南\n---\n\n前言段落。"
    code = "```bash\n# 这不是标题\npip install rag-app\n\n# 仍在代码块里\n```"
    assert documents[2].text == f"## 第一步 下载\n\n{code}"
    assert documents[4].text == "# Setext 标题\n\nsetext 正文。"
    assert documents[5].text == "### 子节\n\n子节正文。"


def test_markdown_list_followed_by_rule_is_not_a_heading() -> None:
    [doc] = read_document("- 条目一\n---\n正文".encode(), "list.md")
    assert "heading_path" not in doc.metadata


# -------------------------------------------------------------------------- TXT, CSV, JSON


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030", "utf-16", "utf-32"])
def test_text_encodings(encoding: str) -> None:
    [doc] = read_document(docs.text_bytes(encoding), "办法.txt")
    assert doc.text == docs.CHINESE_TEXT.strip()
    assert doc.metadata == {"file_name": "办法.txt"}


def test_short_gbk_text_prefers_gb18030() -> None:
    # charset-normalizer ranks cp949 (Korean) first for these four characters.
    assert decode_text("你好世界".encode("gbk"), "a.txt") == "你好世界"
    assert decode_text("繁體中文測試，這是一段文字。".encode("big5"), "b.txt").startswith("繁體")


@pytest.mark.parametrize("encoding", ["utf-8", "gbk", "utf-8-sig"])
def test_csv_rows_with_headers(encoding: str) -> None:
    [doc] = read_document(docs.csv_bytes(encoding), "名单.csv")
    assert doc.text == "姓名: 张三; 城市: 北京; 备注: 喜欢, 逗号\n姓名: 李四; 城市: 上海"
    assert (doc.metadata["row_start"], doc.metadata["row_end"]) == (2, 3)


def test_csv_with_semicolons() -> None:
    [doc] = read_document("产品;价格\n苹果;5\n香蕉;3\n".encode(), "价格.csv")
    assert doc.text == "产品: 苹果; 价格: 5\n产品: 香蕉; 价格: 3"


def test_json_pretty_printed_with_chinese() -> None:
    [doc] = read_document(docs.json_bytes(), "配置.json")
    assert json.loads(doc.text) == docs.JSON_VALUE
    assert '"产品": "知识库"' in doc.text
    assert "\\u" not in doc.text


def test_json_lines_file() -> None:
    [doc] = read_document('{"问": "一"}\n{"问": "二"}\n'.encode(), "qa.json")
    assert json.loads(doc.text) == [{"问": "一"}, {"问": "二"}]


def test_invalid_json() -> None:
    with pytest.raises(DocumentUnreadable) as info:
        read_document(b'{"a": 1,\n "b": }', "bad.json")
    assert str(info.value) == "bad.json is not valid JSON: Expecting value at line 2, column 7."


# ---------------------------------------------------------------------------- empty files


@pytest.mark.parametrize("name", ["empty.txt", "empty.pdf", "empty.docx", "empty.md"])
def test_empty_file(name: str) -> None:
    with pytest.raises(NoTextFound, match=rf"^{name} is empty\.$"):
        read_document(b"", name)


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"  \r\n\t\n ", "blank.txt"),
        ("\u3000\n".encode("utf-16"), "blank16.txt"),
        (b"<html><body><script>x()</script> </body></html>", "blank.html"),
        (b"# \n\n", "blank.md"),
        (b"", "blank.csv"),
    ],
)
def test_whitespace_only_text(data: bytes, name: str) -> None:
    with pytest.raises(NoTextFound, match=rf"^{name} (contains no text|is empty)\.$"):
        read_document(data, name)


# ------------------------------------------------------------------- hostile ZIP containers


def test_zip_bomb_is_refused_before_parsing() -> None:
    with pytest.raises(DocumentUnreadable) as info:
        read_document(docs.zip_bomb_docx(1_000_000), "bomb.docx", max_unpacked_bytes=100_000)
    message = str(info.value)
    assert "decompressed size" in message
    assert "exceeds the limit" in message


def test_zip_bomb_by_compression_ratio() -> None:
    data = docs.zip_bomb_docx(20 * 1024 * 1024)
    assert len(data) < 100_000
    with pytest.raises(DocumentUnreadable, match="zip bomb"):
        read_document(data, "ratio.docx")


def test_unusual_zip_compression_is_refused() -> None:
    with pytest.raises(DocumentUnreadable, match="compression method"):
        read_document(docs.bzip2_docx(), "bz.docx")


def test_office_extension_on_other_zip_content() -> None:
    with pytest.raises(UnsupportedFileType, match=r"is not a Word document.*a ZIP archive"):
        read_document(docs.plain_zip(), "fake.docx")
    with pytest.raises(UnsupportedFileType, match=r"is not a Word document.*an Excel workbook"):
        read_document(docs.xlsx_bytes(), "renamed.docx")
    with pytest.raises(UnsupportedFileType, match=r"is not a PowerPoint.*a Word document"):
        read_document(docs.docx_bytes(), "renamed.pptx")


def test_non_zip_and_damaged_zip_named_docx() -> None:
    with pytest.raises(UnsupportedFileType, match=r"not a Word document \(\.docx\)"):
        read_document("这只是文本".encode(), "text.docx")
    with pytest.raises(DocumentUnreadable, match="ZIP container cannot be opened"):
        read_document(docs.damaged_zip(), "damaged.docx")


# ------------------------------------------------------------------------------ file names


def test_path_traversal_names_are_reduced_to_the_base_name() -> None:
    unix, windows = docs.PATH_TRAVERSAL_NAMES
    [doc] = read_document(b"root:x:0:0", unix)
    assert doc.metadata["file_name"] == "passwd.txt"
    documents = read_document(docs.markdown_bytes(), windows)
    assert {doc.metadata["file_name"] for doc in documents} == {"evil.md"}
    with pytest.raises(NoTextFound, match=r"^evil\.md is empty"):
        read_document(b"", windows)


def test_every_error_is_an_indexes_error_with_one_line() -> None:
    bad_inputs = [
        (docs.corrupt_pdf(), "a.pdf"),
        (docs.scanned_pdf(), "b.pdf"),
        (docs.broken_docx(), "c.docx"),
        (docs.damaged_zip(), "d.xlsx"),
        (b"{", "e.json"),
        (docs.elf_executable(), "f.md"),
        (b"x", "g.exe"),
    ]
    for data, name in bad_inputs:
        with pytest.raises(IndexesError) as info:
            read_document(data, name)
        message = str(info.value)
        assert "\n" not in message
        assert message.endswith((".", ")")) or "could not be read" in message


# ------------------------------------------------------------------------------- no network

_NO_NETWORK = """
import socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access attempted: " + repr(args[:2]))

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.getaddrinfo = refuse
socket.create_connection = refuse

from indexes.readers import read_document
from tests import fixtures_docs as docs

cases = [
    (docs.text_pdf(), "a.pdf"), (docs.docx_bytes(), "b.docx"), (docs.xlsx_bytes(), "c.xlsx"),
    (docs.pptx_bytes(), "d.pptx"), (docs.html_bytes(), "e.html"),
    (docs.cms_article_html(), "f.html"), (docs.markdown_bytes(), "g.md"),
    (docs.text_bytes("gbk"), "h.txt"), (docs.csv_bytes("gbk"), "i.csv"),
    (docs.json_bytes(), "j.json"),
]
for data, name in cases:
    assert read_document(data, name), name
print("ok")
"""


def test_reading_never_touches_the_network(tmp_path: Path) -> None:
    """In a fresh interpreter (so import-time downloads count too) with sockets disabled."""
    result = subprocess.run(
        [sys.executable, "-c", _NO_NETWORK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
