"""Generators of test documents, as bytes, built with the real libraries (or by hand where a
library cannot write the format, as for PDFs with text). Importable by any test.

Every generator is deterministic and needs no network. Chinese text appears in every format that
can hold it; the PDFs use the standard Helvetica font, which has no CJK glyphs, so they are English.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import zipfile
from collections.abc import Sequence

import docx
import openpyxl
import pptx
import pypdf
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml.ns import qn
from docx.oxml.parser import OxmlElement
from pptx.util import Inches

# --------------------------------------------------------------------------------------------
# PDF, written by hand: pypdf cannot lay out text, and a hand-written file keeps the fixture
# independent of any PDF generator.


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _assemble_pdf(objects: Sequence[bytes]) -> bytes:
    """Objects numbered 1..n (object 1 must be the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n"
    ).encode()
    return bytes(out)


def _stream(content: bytes, extra: str = "") -> bytes:
    return f"<< /Length {len(content)}{extra} >>\nstream\n".encode() + content + b"\nendstream"


def _pdf_pages(contents: Sequence[bytes], resources: str) -> bytes:
    """Catalog (1), page tree (2), shared resource object (3), then a page + content per page."""
    n = len(contents)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        resources.encode(),
    ]
    for i, content in enumerate(contents):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources 3 0 R "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(_stream(content))
    return _assemble_pdf(objects)


def pdf_with_pages(pages: Sequence[Sequence[str]]) -> bytes:
    """A text PDF: one page per item, each line of the item drawn in Helvetica 11pt."""
    contents = []
    for lines in pages:
        ops = ["BT", "/F1 11 Tf", "13 TL", "56 740 Td"]
        ops += [f"({_pdf_escape(line)}) Tj T*" for line in lines]
        ops.append("ET")
        contents.append("\n".join(ops).encode("latin-1"))
    font = "<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
    font += "/Encoding /WinAnsiEncoding >> >> >>"
    return _pdf_pages(contents, font)


def text_pdf() -> bytes:
    """Three pages with distinct, recognisable text."""
    return pdf_with_pages(
        [
            ["Annual report 2024", "Revenue grew by 12 percent (see page 3)."],
            ["Chapter two: operations", "The plant in Suzhou opened in March."],
            ["Chapter three: outlook", "We expect steady growth next year."],
        ]
    )


def long_pdf(n_pages: int = 200, lines_per_page: int = 50) -> bytes:
    """A book-like PDF: full pages of text, for timing page extraction."""
    pages = []
    for page in range(1, n_pages + 1):
        lines = [f"Page {page} marker PAGE{page:04d}END"]
        lines += [
            f"Line {line}: the quick brown fox jumps over the lazy dog, retrieval augmented "
            f"generation {page}-{line}"
            for line in range(1, lines_per_page)
        ]
        pages.append(lines)
    return pdf_with_pages(pages)


def scanned_pdf(n_pages: int = 2) -> bytes:
    """Pages that only paint an image (what a scanner produces): no text layer at all."""
    contents = [b"q 612 0 0 792 0 0 cm /Im1 Do Q" for _ in range(n_pages)]
    # The image is inlined into the resources object as a direct stream is not allowed there,
    # so it goes last and the resources reference it.
    n = len(contents)
    image_number = 4 + 2 * n
    pdf_objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(n))}] "
        f"/Count {n} >>".encode(),
        f"<< /XObject << /Im1 {image_number} 0 R >> >>".encode(),
    ]
    for i, content in enumerate(contents):
        pdf_objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources 3 0 R "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        pdf_objects.append(_stream(content))
    pixels = bytes([0x80, 0x40, 0xC0, 0xFF])
    pdf_objects.append(
        _stream(
            pixels,
            " /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray "
            "/BitsPerComponent 8",
        )
    )
    return _assemble_pdf(pdf_objects)


def corrupt_pdf() -> bytes:
    """A PDF header followed by a cut-off first object: no catalog, no page tree, no xref."""
    return text_pdf()[:40]


def encrypted_pdf(user_password: str, owner_password: str) -> bytes:
    """The text PDF encrypted with pypdf (AES-128; an empty user password opens it freely)."""
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(text_pdf()))
    writer.encrypt(user_password, owner_password, algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def windows_executable() -> bytes:
    """The start of a PE file: DOS header, stub message, padding and the PE signature."""
    header = bytearray(b"MZ" + b"\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00")
    header += b"\x00" * (0x3C - len(header)) + (0x80).to_bytes(4, "little")
    header += b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21"
    header += b"This program cannot be run in DOS mode.\r\r\n$"
    header += b"\x00" * (0x80 - len(header)) + b"PE\x00\x00" + b"\x00" * 256
    return bytes(header)


def elf_executable() -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"\x02\x00\x3e\x00" + b"\x00" * 200


# --------------------------------------------------------------------------------------------
# Office formats


# --------------------------------------------------------------------------------------------
# Office formats, written with the same libraries the readers use.

LEAVE_TABLE = [
    ["假期类型", "天数", "说明"],
    ["年假", "5", "工作满一年"],
    ["病假", "10", "需提供证明 | 医院"],
]


def docx_bytes() -> bytes:
    """Headings by built-in style, by a Chinese-named style and by outline level; a table."""
    document = docx.Document()
    document.add_paragraph("员工手册", style="Title")
    document.add_paragraph("前言：本手册适用于全体员工。")
    document.add_heading("第一章 总则", level=1)
    document.add_heading("第一条 目的", level=2)
    document.add_paragraph("为了规范公司管理，制定本手册。")
    document.add_heading("第二条 适用范围", level=2)
    document.add_paragraph("本手册适用于公司全体员工。")
    table = document.add_table(rows=len(LEAVE_TABLE), cols=len(LEAVE_TABLE[0]))
    for row, values in zip(table.rows, LEAVE_TABLE, strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    document.add_paragraph("以上假期需提前申请。")
    document.add_heading("第二章 考勤", level=1)
    # WPS and localised Word templates name their heading styles "标题 N".
    chinese_heading = document.styles.add_style("标题 2", WD_STYLE_TYPE.PARAGRAPH)
    document.add_paragraph("第三条 工作时间", style=chinese_heading)
    document.add_paragraph("每天工作八小时。")
    # A heading made by outline level alone, on a plain paragraph.
    appendix = document.add_paragraph("附录 A")
    outline = OxmlElement("w:outlineLvl")
    outline.set(qn("w:val"), "0")
    appendix._p.get_or_add_pPr().append(outline)
    document.add_paragraph("附录内容：联系人事部。")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx_bytes() -> bytes:
    """Two sheets; the first has a blank first row, so its headers are on row 2."""
    workbook = openpyxl.Workbook()
    staff = workbook.active
    assert staff is not None
    staff.title = "员工信息"
    staff.append([])
    staff.append(["姓名", "部门", "入职日期", "工资"])
    staff.append(["张三", "研发部", datetime.date(2020, 3, 1), 15000])
    staff.append(["李四", "市场部", datetime.datetime(2021, 7, 15, 9, 30), 12000.5])
    staff.append(["王五", None, None, 9000.0])
    summary = workbook.create_sheet("Summary")
    summary.append(["Metric", "Value"])
    summary.append(["Headcount", 3])
    summary.append(["Active", True])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def big_xlsx(rows: int = 450) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.title = "数据"
    sheet.append(["编号", "名称"])
    for i in range(1, rows + 1):
        sheet.append([i, f"项目{i}"])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _set_notes(slide: pptx.slide.Slide, text: str) -> None:
    frame = slide.notes_slide.notes_text_frame
    assert frame is not None
    frame.text = text


def pptx_bytes() -> bytes:
    """Slide 1: title, body, notes. Slide 2: empty. Slide 3: title, a table, notes."""
    presentation = pptx.Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[1])
    assert first.shapes.title is not None
    first.shapes.title.text = "产品介绍"
    first.placeholders[1].text_frame.text = "我们的产品支持中文检索"
    _set_notes(first, "强调检索速度")
    presentation.slides.add_slide(presentation.slide_layouts[6])
    third = presentation.slides.add_slide(presentation.slide_layouts[5])
    assert third.shapes.title is not None
    third.shapes.title.text = "Pricing 价格"
    shape = third.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1.5))
    for r, values in enumerate([["方案", "价格"], ["标准版", "999 元"]]):
        for c, value in enumerate(values):
            shape.table.cell(r, c).text = value
    _set_notes(third, "Mention the discount")
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Text formats

HTML_PAGE = """<!DOCTYPE html>
<html lang="zh-CN"><head>
<meta charset="{charset}">
<title>员工手册 - 示例公司</title>
<style>body {{ font-family: sans-serif; }} .ad {{ color: red; }}</style>
<script>var tracking = "追踪代码"; window.dataLayer = [];</script>
</head><body>
<header class="site"><a href="/">示例公司官网</a><p>欢迎访问</p></header>
<nav><ul><li><a href="/">首页</a></li><li><a href="/products">产品中心</a></li>
<li><a href="/contact">联系我们</a></li></ul></nav>
<main><article>
<header><h1>员工手册</h1><p class="byline">人事部 发布</p></header>
<p>本手册说明公司的基本制度。</p>
<h2>第一章 总则</h2>
<p>为了规范管理，<b>制定</b>本手册。</p>
<h3>第一条 目的</h3>
<p>保障员工权益。</p>
<ul><li>公平</li><li>透明</li></ul>
<table><tr><th>假期</th><th>天数</th></tr><tr><td>年假</td><td>5</td></tr></table>
<h2>第二章 考勤</h2>
<p>每天工作八小时。</p>
<pre>上班 09:00
下班 18:00</pre>
<form action="/subscribe"><label>订阅邮件</label><input name="email"></form>
</article></main>
<aside><h2>热门文章</h2><p>广告位招租</p></aside>
<footer><p>版权所有 2024 示例公司</p><a href="/privacy">隐私政策</a></footer>
<script>console.log("页脚脚本");</script>
</body></html>
"""

HTML_NOISE = (
    "示例公司官网",
    "首页",
    "产品中心",
    "追踪代码",
    "热门文章",
    "广告位",
    "版权所有",
    "订阅邮件",
    "页脚脚本",
    "font-family",
)


def html_bytes(charset: str = "utf-8") -> bytes:
    return HTML_PAGE.format(charset=charset).encode(charset)


# A saved CMS article: the noise is marked only by class names (menu, breadcrumb, share bar,
# related posts, comments, sidebar, cookie banner, footer), as on most real sites.
CMS_ARTICLE = (
    '<!DOCTYPE html><html lang="zh-CN"><head><meta charset="utf-8"><title>'
    "如何申请年假 - 人事知识库 - 示例集团</title>\n"
    '<link rel="stylesheet" href="/a.css"><script src="/analytics.js"></script>\n'
    '<script type="application/ld+json">'
    '{"@type":"Article","headline":"结构化数据噪音"}</script></head>\n'
    '<body class="page">\n'
    '<div id="cookie-banner" class="cookie-consent">本网站使用 Cookie 以改善体验。'
    '<a href="#">接受</a></div>\n'
    '<div class="top-bar"><div class="container"><span>客服热线 400-000-0000</span>'
    '<a href="/login">登录</a> | <a href="/register">注册</a></div></div>\n'
    '<div id="header" class="site-header"><div class="logo"><a href="/">'
    '<img src="/logo.png" alt="示例集团"></a></div>\n'
    '<ul class="menu"><li><a href="/">首页</a></li><li><a href="/hr">人事制度</a></li><li>'
    '<a href="/it">IT 支持</a></li><li><a href="/finance">财务报销</a></li></ul>\n'
    '<div class="search"><form><input placeholder="搜索知识库"></form></div></div>\n'
    '<div class="breadcrumb"><a href="/">首页</a> &gt; <a href="/hr">人事制度</a>'
    " &gt; 年假</div>\n"
    '<div class="wrapper"><div class="content-area"><div class="post">\n'
    '<h1 class="entry-title">如何申请年假</h1>\n'
    '<div class="meta">发布于 2024-03-01 · 阅读 1024 次 · 作者：人事部</div>\n'
    '<div class="share">分享到：<a>微信</a><a>微博</a></div>\n'
    '<div class="entry-content">\n'
    "<p>员工在公司工作满一年后，每年可享受五天带薪年假。年假应当在当年内休完，"
    "确因工作原因未休的，可以顺延至次年第一季度。</p>\n"
    "<h2>申请流程</h2>\n"
    "<p>员工应提前三个工作日在 OA 系统中提交年假申请，经直属主管审批后生效。"
    "连续休假超过五天的，需部门负责人加签。</p>\n"
    "<ol><li>登录 OA 系统，进入“请假申请”。</li><li>选择假期类型为“年假”，填写起止日期。"
    "</li><li>提交后等待主管审批。</li></ol>\n"
    "<h2>年假天数</h2>\n"
    '<table class="data"><thead><tr><th>工龄</th><th>年假天数</th></tr></thead><tbody>\n'
    "<tr><td>1-10 年</td><td>5 天</td></tr><tr><td>10-20 年</td><td>10 天</td></tr><tr><td>"
    "20 年以上</td><td>15 天</td></tr></tbody></table>\n"
    "<h2>注意事项</h2>\n"
    "<p>年假不得折算为现金，离职时未休年假按国家规定处理。</p>\n"
    "</div>\n"
    '<div class="post-tags">标签：<a>年假</a> <a>请假</a></div>\n'
    '<div class="related-posts"><h3>相关文章</h3><ul><li><a>病假如何申请</a></li><li><a>'
    "婚假规定</a></li></ul></div>\n"
    '<div id="comments" class="comments-area"><h3>评论 (2)</h3><div class="comment"><p>'
    '张三：请问年假可以分开休吗？</p></div><div class="comment"><p>人事小王：可以，'
    "最少半天。</p></div>\n"
    '<div class="comment-form">发表评论 <textarea></textarea><button>提交</button></div>'
    "</div>\n"
    "</div></div>\n"
    '<div class="sidebar widget-area"><div class="widget"><h3>热门文章</h3><ul><li><a>'
    "五险一金缴纳比例</a></li><li><a>报销流程</a></li></ul></div>\n"
    '<div class="widget ad">广告：企业培训课程八折优惠</div></div></div>\n'
    '<div id="footer" class="site-footer"><div class="links"><a>关于我们</a> <a>'
    "联系我们</a> <a>隐私政策</a></div><p>"
    "Copyright 2024 示例集团 版权所有 沪ICP备00000000号</p></div>\n"
    "<script>"
    "window.dataLayer=[];function gtag(){dataLayer.push(arguments)};gtag('js',new Date());</script>"
    "\n"
    "</body></html>\n"
)
CMS_CONTENT = (
    "如何申请年假",
    "每年可享受五天带薪年假",
    "申请流程",
    "提前三个工作日",
    "登录 OA 系统",
    "等待主管审批",
    "20 年以上",
    "15 天",
    "注意事项",
    "不得折算为现金",
)
CMS_NOISE = (
    "Cookie",
    "客服热线",
    "注册",
    "人事制度",
    "IT 支持",
    "搜索",
    "分享到",
    "相关文章",
    "病假如何申请",
    "评论",
    "年假可以分开休",
    "热门文章",
    "广告",
    "关于我们",
    "ICP",
    "dataLayer",
    "结构化数据噪音",
    "阅读 1024",
)


def cms_article_html() -> bytes:
    return CMS_ARTICLE.encode("utf-8")


MARKDOWN = """---
title: 安装指南
---
前言段落。

# 安装指南

介绍文字。

## 第一步 下载

```bash
# 这不是标题
pip install rag-app

# 仍在代码块里
```

## 第二步 配置

配置说明，见 `config/default.yaml`。

Setext 标题
===========

setext 正文。

### 子节 #

子节正文。
"""


def markdown_bytes() -> bytes:
    return MARKDOWN.encode("utf-8")


CHINESE_TEXT = (
    "第一章 总则\n第一条 为了规范公司的财务管理，制定本办法。\n第二条 本办法适用于全体员工。\n"
)


def text_bytes(encoding: str) -> bytes:
    """CHINESE_TEXT in an encoding: 'gbk', 'utf-8-sig', 'utf-16' (BOM included), 'utf-8'."""
    return CHINESE_TEXT.replace("\n", "\r\n").encode(encoding)


CSV_ROWS = [
    ["姓名", "城市", "备注"],
    ["张三", "北京", "喜欢, 逗号"],
    ["李四", "上海", ""],
]


def csv_bytes(encoding: str = "utf-8") -> bytes:
    out = io.StringIO()
    csv.writer(out).writerows(CSV_ROWS)
    return out.getvalue().encode(encoding)


JSON_VALUE = {"产品": "知识库", "版本": 2, "特性": ["中文检索", "流式输出"], "启用": True}


def json_bytes() -> bytes:
    return json.dumps(JSON_VALUE, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Hostile inputs


def zip_bomb_docx(unpacked_bytes: int = 1_000_000) -> bytes:
    """A DOCX-shaped ZIP whose word/document.xml is `unpacked_bytes` of zeros (~1000:1)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open("word/document.xml", "w") as part:
            chunk = b"\0" * (1 << 20)
            left = unpacked_bytes
            while left > 0:
                part.write(chunk[: min(left, len(chunk))])
                left -= len(chunk)
    return out.getvalue()


def bzip2_docx() -> bytes:
    """DOCX part names, but compressed with bzip2, which Office never uses."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        archive.writestr("word/document.xml", "<document/>")
    return out.getvalue()


def plain_zip(name: str = "notes.txt") -> bytes:
    """A ZIP archive that is not an Office document."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, "hello")
    return out.getvalue()


def broken_docx() -> bytes:
    """A ZIP with the DOCX parts' names but garbage inside: the parser itself fails."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types><not-closed>")
        archive.writestr("word/document.xml", "garbage")
    return out.getvalue()


def damaged_zip() -> bytes:
    """Starts like a ZIP, but the central directory is gone."""
    return docx_bytes()[:2000]


PATH_TRAVERSAL_NAMES = ("../../etc/passwd.txt", "..\\..\\evil.md")
