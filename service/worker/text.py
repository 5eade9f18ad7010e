"""Free text columns for models: one tokenisation, in Python for training and in the ONNX
graph for serving, so a served model takes raw strings and a client never tokenises.

Tokens are the runs of ASCII letters and digits of the lowercased text. In the graph that is
ONNX StringNormalizer (LOWER, locale "C") followed by com.microsoft Tokenizer with
TOKEN_PATTERN; in Python, `str.lower` and `re.findall`. They agree on every string: the C
locale lowercases ASCII only and Python lowercases everything, but a lowercased non-ASCII
letter is still not ASCII, so it separates tokens either way. The two exceptions, İ (U+0130)
and the Kelvin sign (U+212A), which Python lowercases to ASCII "i̇" and "k", are turned into
spaces before Python sees them (`python_side`), which is what the graph makes of them.
The locale is "C" because ONNX Runtime's default, en_US.UTF-8, is missing on many machines
and then the session does not load.

Classical models read text as TF-IDF on word uni- and bigrams (scikit-learn
TfidfVectorizer, converted by skl2onnx with the same normaliser and tokenizer). Deep models
read token ids (`TokenIds`): 0 pads, 1 is a word never seen (or seen once) in training,
2.. the vocabulary by frequency; the first `length` tokens of a text, padded with 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

TOKEN_PATTERN = "[a-z0-9]+"
LOCALE = "C"
#: TF-IDF: word uni- and bigrams, the most frequent ones per column (a dense matrix).
NGRAMS = (1, 2)
TFIDF_FEATURES = 2000
PAD, UNKNOWN = 0, 1
#: A token must occur this often in training to get its own id: a rarer one is read as
#: UNKNOWN, so the network learns what an unseen word means.
MIN_COUNT = 2
#: Words that no training text has: parity rows send them.
UNSEEN_TEXT = "qzxjvwords neverseenparadigm"

_PYTHON_ONLY_ASCII = str.maketrans({"\u0130": " ", "\u212a": " "})
_TOKEN = re.compile(TOKEN_PATTERN)
# The Tokenizer pads short rows with this; no token can be it (not in TOKEN_PATTERN).
_PAD_STRING = "#"


def python_side(text: str) -> str:
    """The text as Python must see it so that its lowercasing matches the graph's."""
    return text.translate(_PYTHON_ONLY_ASCII)


def tokens(text: str) -> list[str]:
    """The tokens of one text, as the exported graph finds them."""
    return _TOKEN.findall(python_side(text).lower())


def tfidf(vocabulary: list[str] | None = None) -> Any:
    """An unfitted TF-IDF vectoriser that skl2onnx converts to the graph's tokenisation."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        lowercase=True,
        token_pattern=TOKEN_PATTERN,
        ngram_range=NGRAMS,
        max_features=None if vocabulary else TFIDF_FEATURES,
        vocabulary=vocabulary,
        dtype=np.float32,
    )


def tfidf_vocabulary(texts: Iterable[str]) -> list[str] | None:
    """The TF-IDF terms for these (python_side) texts: the TFIDF_FEATURES commonest, less
    any bigram with a word that is not a term itself. ONNX Runtime's TfIdfVectorizer never
    counts such a bigram (measured: "coloru delivery" kept and "coloru" cut at a tie of the
    max_features ranking gave 0 in the graph, 0.33 in scikit-learn). None: not a word in
    any text."""
    vectorizer = tfidf()
    try:
        vectorizer.fit(list(texts))
    except ValueError:  # "empty vocabulary": every text is blank
        return None
    terms = set(vectorizer.vocabulary_)
    return sorted(t for t in terms if all(word in terms for word in t.split(" ")))


def tfidf_options(vectorizer: Any) -> dict[int, dict[str, Any]]:
    """skl2onnx options for a fitted `tfidf()`: the C locale (see the module docstring)."""
    return {id(vectorizer): {"locale": LOCALE}}


class TokenIds:
    """A text column as `length` token ids per row, float32 (a column of the feature matrix
    deep networks read; ids are exact in float32 far beyond any vocabulary)."""

    def __init__(self, vocabulary_size: int, length: int) -> None:
        self.vocabulary_size = vocabulary_size
        self.length = length
        self.vocabulary: dict[str, int] = {}

    @property
    def ids(self) -> int:
        """How many ids there are: PAD, UNKNOWN and the vocabulary."""
        return len(self.vocabulary) + 2

    def fit(self, texts: Iterable[str]) -> TokenIds:
        counts = Counter(token for text in texts for token in tokens(text))
        frequent = [t for t, n in counts.items() if n >= MIN_COUNT]
        # Most frequent first, ties alphabetically: the same rows give the same ids.
        frequent.sort(key=lambda t: (-counts[t], t))
        chosen = frequent[: max(0, self.vocabulary_size - 2)]
        self.vocabulary = {token: index + 2 for index, token in enumerate(chosen)}
        return self

    def transform(self, texts: Iterable[str]) -> np.ndarray:
        rows = [
            [self.vocabulary.get(t, UNKNOWN) for t in tokens(text)[: self.length]] for text in texts
        ]
        ids = np.full((len(rows), self.length), PAD, dtype=np.float32)
        for row, found in zip(ids, rows, strict=True):
            row[: len(found)] = found
        return ids

    def feature_names(self, column: str) -> list[str]:
        return [f"text__{column}__token_{i}" for i in range(self.length)]

    def onnx_nodes(self, column: str, output: str) -> tuple[list[Any], list[Any]]:
        """Nodes (and initializers) from the raw column `column` (STRING [N, 1]) to `output`
        FLOAT [N, length]: lowercase, tokenise, look the tokens up, pad or cut to length."""
        p = f"{column}/tokens/"
        keys = [_PAD_STRING, *self.vocabulary]
        values = [PAD, *self.vocabulary.values()]
        initializers = [
            helper.make_tensor(p + "flat", TensorProto.INT64, [1], [-1]),
            helper.make_tensor(p + "pads", TensorProto.INT64, [4], [0, 0, 0, self.length]),
            helper.make_tensor(p + "zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor(p + "length", TensorProto.INT64, [1], [self.length]),
            helper.make_tensor(p + "axis", TensorProto.INT64, [1], [1]),
        ]
        nodes = [
            # StringNormalizer and Tokenizer take [N]: the column arrives as [N, 1].
            helper.make_node("Reshape", [column, p + "flat"], [p + "texts"]),
            helper.make_node(
                "StringNormalizer",
                [p + "texts"],
                [p + "lower"],
                case_change_action="LOWER",
                is_case_sensitive=1,
                locale=LOCALE,
            ),
            helper.make_node(
                "Tokenizer",
                [p + "lower"],
                [p + "words"],
                domain="com.microsoft",
                mark=0,
                mincharnum=1,
                pad_value=_PAD_STRING,
                tokenexp=TOKEN_PATTERN,
            ),
            helper.make_node(
                "LabelEncoder",
                [p + "words"],
                [p + "ids"],
                domain="ai.onnx.ml",
                keys_strings=keys,
                values_int64s=values,
                default_int64=UNKNOWN,
            ),
            # [N, tokens] -> [N, tokens + length] -> the first `length`: pads short rows,
            # cuts long ones, and gives [N, length] for a batch without a single token.
            helper.make_node("Pad", [p + "ids", p + "pads"], [p + "padded"], mode="constant"),
            helper.make_node(
                "Slice", [p + "padded", p + "zero", p + "length", p + "axis"], [p + "cut"]
            ),
            helper.make_node("Cast", [p + "cut"], [output], to=TensorProto.FLOAT),
        ]
        return nodes, initializers


def token_graph(
    front: onnx.ModelProto | None,
    front_output: str,
    encoders: dict[str, TokenIds],
    input_order: list[str],
    output: str,
) -> onnx.ModelProto:
    """The preprocessing graph with token ids: `front` (the other columns' graph, its
    features in `front_output`; None when every column is text) plus one token subgraph per
    text column, concatenated into `output` in the order the feature matrix has them."""
    nodes: list[Any] = []
    initializers: list[Any] = []
    inputs: dict[str, Any] = {}
    parts: list[str] = []
    if front is not None:
        nodes.extend(front.graph.node)
        initializers.extend(front.graph.initializer)
        inputs.update({value.name: value for value in front.graph.input})
        parts.append(front_output)
    for column, encoder in encoders.items():
        column_nodes, column_initializers = encoder.onnx_nodes(column, f"{column}/token_ids")
        nodes.extend(column_nodes)
        initializers.extend(column_initializers)
        inputs[column] = helper.make_tensor_value_info(column, TensorProto.STRING, [None, 1])
        parts.append(f"{column}/token_ids")
    nodes.append(helper.make_node("Concat", parts, [output], axis=1))
    width = None if front is not None else sum(e.length for e in encoders.values())
    graph = helper.make_graph(
        nodes,
        "preprocessing",
        [inputs[name] for name in input_order],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None, width])],
        initializer=initializers,
    )
    opsets = {"": 17, "ai.onnx.ml": 3, "com.microsoft": 1}
    if front is not None:
        for entry in front.opset_import:
            opsets[entry.domain] = max(opsets.get(entry.domain, 0), entry.version)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())]
    )
    model.ir_version = front.ir_version if front is not None else 8
    return model
