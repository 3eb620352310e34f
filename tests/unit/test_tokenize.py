"""jieba tokens for keyword search: the same cut for documents and queries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from indexes.tokenize import DEFAULT_STOPWORDS, tokenize


def test_chinese_is_cut_into_words_and_their_sub_words() -> None:
    tokens = tokenize("活期存款利率是多少？")
    # Search mode: the long word and its dictionary parts, so either form matches.
    assert {"活期存款", "活期", "存款", "利率", "多少"} <= set(tokens)
    assert "？" not in tokens


def test_mixed_chinese_and_english_is_lowercased() -> None:
    tokens = tokenize("Milvus Lite 支持 BM25 全文检索，也支持 Hybrid Search。")
    assert {"milvus", "lite", "bm25", "hybrid", "search", "全文检索", "支持"} <= set(tokens)
    assert all(token == token.lower() for token in tokens)


def test_punctuation_and_whitespace_are_dropped_but_symbols_inside_words_kept() -> None:
    tokens = tokenize("  利率：0.2%！ C++ , e-mail ... \t\n 《合同》 ")
    assert tokens == ["利率", "0.2%", "c++", "e", "mail", "合同"]


def test_full_width_letters_and_digits_are_folded() -> None:
    assert tokenize("ＡＢＣ１２３") == tokenize("abc123") == ["abc123"]


def test_empty_and_punctuation_only_text_give_no_tokens() -> None:
    assert tokenize("") == []
    assert tokenize("，。！？……  ") == []


def test_stopwords_are_optional() -> None:
    text = "The rate of the deposit 是 多少"
    assert "the" in tokenize(text)
    filtered = tokenize(text, stopwords=DEFAULT_STOPWORDS)
    assert "the" not in filtered
    assert "是" not in filtered
    assert {"rate", "deposit", "多少"} <= set(filtered)


def test_jieba_cache_goes_where_configured_not_to_tmp(tmp_path: Path) -> None:
    # A fresh interpreter: jieba loads its dictionary once per process.
    code = (
        "import sys, pathlib, jieba\n"
        "from indexes.tokenize import configure_jieba, tokenize\n"
        "configure_jieba(pathlib.Path(sys.argv[1]))\n"
        "configure_jieba(pathlib.Path(sys.argv[1]) / 'ignored')\n"
        "print(jieba.dt.tmp_dir)\n"
        "print(' '.join(tokenize('银行存款')))\n"
    )
    cache_dir = tmp_path / "jieba"
    result = subprocess.run(
        [sys.executable, "-c", code, str(cache_dir)], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == str(cache_dir)
    assert "存款" in lines[1].split()
    assert (cache_dir / "jieba.cache").exists()
    assert not (cache_dir / "ignored").exists()
    # jieba's "Building prefix dict ..." chatter is silenced.
    assert "prefix dict" not in result.stderr
