"""Repetition penalty of the Challenger reward (RZERO_SPEC.md section 2, "Repetition penalty").

Over the B questions of one reward batch: d(i, j) = 1 - BLEU(hyp=q_i, ref=q_j) for i < j, mirrored
(d(j, i) = d(i, j), diagonal 0), with nltk's ``sentence_bleu`` settings the authors used
(whitespace tokens, 4-grams, weights (0.25,)*4, ``SmoothingFunction().method1``, epsilon 0.1).
Average-linkage agglomerative clustering with distance threshold 0.5 (as sklearn's
``AgglomerativeClustering(metric="precomputed", linkage="average", distance_threshold=0.5)``)
gives clusters; penalty_i = |cluster(i)| / B.

The authors compute this pair by pair in Python (~12 minutes for B = 2048). Here it is exact and
fast:

* BLEU only needs, per ordered pair, the clipped n-gram matches ``sum_k min(c_i[k], c_j[k])``
  (n = 1..4) and the two lengths. With "layered indicators" (feature (k, t) = [c[k] >= t],
  t = 1..c[k]) the clipped matches are the dot products of the indicator rows, so one product
  X_n X_n^T per order gives all pairs (dense BLAS for frequent features, sparse for the rest).
* The float BLEU is then computed with exactly nltk's operations, in the same order: the same
  correctly rounded divisions, ``math.log``, ``math.fsum`` and ``math.exp`` once per distinct
  tuple of precisions, ``math.exp`` for the brevity penalty once per distinct length pair. The distances are therefore bit-identical to
  nltk's, which matters because ties in the linkage are broken by exact float comparisons.
* The condensed matrix goes to the same scipy ``linkage(method="average")`` call sklearn makes,
  and the tree is cut exactly as sklearn's ``_hc_cut`` does (see ``_cut_tree``).

The references (``reference_*``) do it the authors' way with nltk + sklearn; they are imported
lazily so that the fast path needs only numpy and scipy.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import scipy.linalg.blas
import scipy.sparse
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

MAX_ORDER = 4  # BLEU-4
_WEIGHT = 0.25  # uniform weights (0.25,)*4; a power of two, so w * log(p) is exact
_EPSILON = 0.1  # nltk SmoothingFunction().method1 default
DEFAULT_DISTANCE_THRESHOLD = 0.5

# Features present in at least this many questions are multiplied with dense BLAS, the rest with a
# sparse product: a sparse product costs ~df^2 per feature, a dense one ~B^2 regardless of df.
_DENSE_MIN_DOC_FREQ = 64
# ... and only if those features carry enough work: sum(doc_freq^2) >= this * B^2.
_DENSE_MIN_WORK = 0.5


# ----------------------------------------------------------------------------- n-gram statistics


def _tokenize(questions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace tokens (``q.split()``, as the authors) mapped to integer ids.

    Returns ``token_ids`` (T,) int64 (all questions concatenated) and ``lengths`` (B,) int64.
    """
    split = [question.split() for question in questions]
    lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
    flat = list(itertools.chain.from_iterable(split))
    vocab = {token: i for i, token in enumerate(dict.fromkeys(flat))}
    token_ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
    return token_ids, lengths


def _factorize(key: np.ndarray, key_bound: int) -> tuple[np.ndarray, int]:
    """Group ids of a non-negative int64 key < key_bound: (inverse (P,) int64, number of groups).

    Ids follow the sorted order of the keys, as ``np.unique(key, return_inverse=True)``, without
    its argsort (numpy's SIMD sort is ~10x faster than its argsort, and this runs on all B^2/2
    pairs): small bounds use a presence table, large ones sort the packed (key, position) values
    when both fit in 63 bits, and only the rest fall back to ``np.unique``.
    """
    n = len(key)
    if n == 0:  # e.g. no n-gram shared by two questions, next to one that repeats a word 1000+ times
        return np.empty(0, dtype=np.int64), 0
    if key_bound <= 4 * n + 1024:
        present = np.zeros(key_bound, dtype=bool)
        present[key] = True
        values = np.flatnonzero(present)
        rank = np.empty(key_bound, dtype=np.int64)
        rank[values] = np.arange(len(values), dtype=np.int64)
        return rank[key], len(values)
    position_bits = max(1, (n - 1).bit_length())
    if (key_bound - 1).bit_length() + position_bits > 63:
        unique, inverse = np.unique(key, return_inverse=True)
        return inverse.reshape(-1), len(unique)
    packed = np.sort((key << position_bits) | np.arange(n, dtype=np.int64))
    sorted_key = packed >> position_bits
    is_first = np.empty(n, dtype=bool)
    is_first[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=is_first[1:])
    group = np.cumsum(is_first) - 1
    inverse = np.empty(n, dtype=np.int64)
    inverse[packed & ((1 << position_bits) - 1)] = group
    return inverse, int(group[-1]) + 1


def _factorize_rows(columns: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """Group ids of the rows of non-negative int columns (each (P,)): equal ids iff equal rows.

    Columns are folded into one packed key, compressed back to group ids whenever the next
    column would overflow the 63 - log2(P) bits ``_factorize`` can sort.
    """
    n = len(columns[0])
    key_limit = 1 << (63 - max(1, (n - 1).bit_length()))
    key, key_bound = np.zeros(n, dtype=np.int64), 1
    for column in columns:
        compact, n_values = _factorize(column, int(column.max()) + 1)
        if key_bound * n_values > key_limit:
            key, key_bound = _factorize(key, key_bound)
        key = key * n_values + compact
        key_bound *= n_values
    return _factorize(key, key_bound)


def _representatives(group: np.ndarray, n_groups: int) -> np.ndarray:
    """One position (P index) per group id: (n_groups,) int64."""
    position = np.empty(n_groups, dtype=np.int64)
    position[group] = np.arange(len(group), dtype=np.int64)
    return position


def _upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Entries matrix[i, j], i < j, of a C-ordered (B, B) array in scipy's condensed order."""
    n = matrix.shape[0]
    return np.concatenate([matrix[i, i + 1 :] for i in range(n - 1)])


def _per_hyp(per_doc: np.ndarray) -> np.ndarray:
    """Value of the hypothesis q_i for every pair i < j, condensed order: (B,) -> (B*(B-1)/2,)."""
    n = len(per_doc)
    return np.repeat(per_doc[:-1], np.arange(n - 1, 0, -1))


def _per_ref(per_doc: np.ndarray) -> np.ndarray:
    """Value of the reference q_j for every pair i < j, condensed order: (B,) -> (B*(B-1)/2,)."""
    return np.concatenate([per_doc[i + 1 :] for i in range(len(per_doc) - 1)])


def _ngram_occurrences(token_ids: np.ndarray, lengths: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """For n = 1..MAX_ORDER: (doc (P_n,), gram (P_n,)), one entry per n-gram occurrence.

    ``gram`` is an integer id equal for equal n-grams. The n-gram starting at token s is the pair
    (its (n-1)-gram id, token s+n-1), so ids of order n come from factorizing those pairs.
    """
    n_docs, n_tokens = len(lengths), len(token_ids)
    doc_of_token = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    # Number of tokens from token s to the end of its question, s included.
    remaining = lengths[doc_of_token] - (np.arange(n_tokens, dtype=np.int64) - starts[doc_of_token])
    vocab_size = int(token_ids.max()) + 1 if n_tokens else 1

    out = []
    n_grams = vocab_size
    gram = token_ids
    for n in range(1, MAX_ORDER + 1):
        valid = np.flatnonzero(remaining >= n)
        out.append((doc_of_token[valid], gram[valid]))
        if n < MAX_ORDER:
            longer = np.flatnonzero(remaining >= n + 1)
            next_gram = np.full(n_tokens, -1, dtype=np.int64)
            next_gram[longer], n_grams = _factorize(
                gram[longer] * vocab_size + token_ids[longer + n], n_grams * vocab_size
            )
            gram = next_gram
    return out


def _layered_features(doc: np.ndarray, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Layered indicator features of one n-gram order, shared by >= 2 questions.

    A count c of n-gram k in a question becomes the features (k, level) for level = 0..c-1, so
    min(c_i[k], c_j[k]) = number of levels both questions reach, and the clipped matches of two
    questions are the dot product of their indicator rows. Features present in one question only
    would contribute to the (unused) diagonal and are dropped.
    Returns (row (E,) question index, feature (E,) id in 0..F-1, doc_freq (F,)), one entry per
    (question, feature) with value 1.
    """
    n_grams = int(gram.max()) + 1
    doc_gram, n_doc_grams = _factorize(doc * n_grams + gram, (int(doc.max()) + 1) * n_grams)
    counts = np.bincount(doc_gram, minlength=n_doc_grams)
    first = _representatives(doc_gram, n_doc_grams)
    level = np.arange(len(doc), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    row = np.repeat(doc[first], counts)
    feature_key = level * n_grams + np.repeat(gram[first], counts)
    feature, n_features = _factorize(feature_key, int(counts.max()) * n_grams)
    shared = np.bincount(feature, minlength=n_features)[feature] >= 2
    feature, n_features = _factorize(feature[shared], n_features)
    return row[shared], feature, np.bincount(feature, minlength=n_features)


def _condensed_index(row: np.ndarray, col: np.ndarray, n_docs: int) -> np.ndarray:
    """Position of pair (row, col), row < col, in scipy's condensed (row-major upper) order."""
    return row * (2 * n_docs - row - 1) // 2 + (col - row - 1)


def _clipped_matches(doc: np.ndarray, gram: np.ndarray, n_docs: int) -> np.ndarray:
    """Clipped match counts sum_k min(c_i[k], c_j[k]) of one n-gram order for all pairs i < j.

    ``doc``/``gram``: (P,) one entry per n-gram occurrence. Returns (B*(B-1)/2,) int64 in
    condensed order. Frequent features (a sparse product costs ~doc_freq^2 each) go through one
    dense symmetric rank-k update (cost ~B^2 each), the rest through a sparse product.
    """
    matches = np.zeros(n_docs * (n_docs - 1) // 2, dtype=np.int64)
    if len(doc) == 0:
        return matches
    row, feature, doc_freq = _layered_features(doc, gram)
    if len(row) == 0:
        return matches
    is_dense_feature = doc_freq >= _DENSE_MIN_DOC_FREQ
    if np.sum(doc_freq[is_dense_feature].astype(np.float64) ** 2) < _DENSE_MIN_WORK * n_docs**2:
        is_dense_feature[:] = False  # too little work to pay for a B x B dense product
    dense = is_dense_feature[feature]

    if not dense.all():
        sparse_row, sparse_feature = row[~dense], feature[~dense]
        col = _factorize(sparse_feature, len(doc_freq))[0]
        x = scipy.sparse.csr_matrix(
            (np.ones(len(sparse_row), dtype=np.int32), (sparse_row, col)), shape=(n_docs, int(col.max()) + 1)
        )
        product = scipy.sparse.triu(x @ x.T, k=1, format="coo")
        pair = _condensed_index(product.row.astype(np.int64), product.col.astype(np.int64), n_docs)
        matches[pair] = product.data
    if dense.any():
        col = _factorize(feature[dense], len(doc_freq))[0]
        x = np.zeros((n_docs, int(col.max()) + 1), dtype=np.float32)
        x[row[dense], col] = 1.0
        # x x^T by BLAS syrk (half the work of a GEMM); float32 is exact here, all sums are small
        # integers. x.T is Fortran-ordered, so BLAS reads it without a copy, and the lower triangle
        # of the Fortran-ordered result is the upper triangle of its C-ordered transpose.
        lower = scipy.linalg.blas.ssyrk(1.0, x.T, trans=1, lower=1)
        matches += _upper_triangle(lower.T).astype(np.int64)
    return matches


# ----------------------------------------------------------------------------- BLEU, as nltk


def _weighted_log_precision(matches: int, den: int) -> float:
    """w * log(p_n) exactly as nltk computes it for one order.

    nltk's modified precision is Fraction(m, den), den = max(1, #hyp n-grams), and ``math.log``
    of a Fraction is the log of the correctly rounded m / den; method1 replaces m = 0 by
    (0 + epsilon) / den (a float division).
    """
    precision = matches / den if matches else (0 + _EPSILON) / den
    return _WEIGHT * math.log(precision)


def _exp_fsum_per_row(term_codes: Sequence[np.ndarray], code_base: int) -> np.ndarray:
    """exp(math.fsum(w * log(p_n) for n = 1..4)) for each pair, as nltk computes it.

    ``term_codes``: MAX_ORDER arrays (P,) with code = matches * code_base + den for each order.
    ``math.fsum`` is correctly rounded and numpy has no equivalent, and numpy's exp/log may differ
    from libm's in the last bit, so these run through ``math`` once per distinct tuple of
    precisions (~20k for B = 2048 questions of ~60 tokens), with C-level ``map`` loops.
    Returns (P,) float64.
    """
    group, n_groups = _factorize_rows(term_codes)
    first = _representatives(group, n_groups)
    columns = []
    for codes in term_codes:
        code, n_codes = _factorize(codes[first], int(codes.max()) + 1)
        distinct = np.empty(n_codes, dtype=np.int64)
        distinct[code] = codes[first]
        logs = [_weighted_log_precision(*divmod(c, code_base)) for c in distinct.tolist()]
        columns.append(np.asarray(logs, dtype=np.float64)[code].tolist())
    sums = map(math.fsum, zip(*columns))  # the same 4 terms in the same order as nltk
    exp_sums = np.fromiter(map(math.exp, sums), dtype=np.float64, count=n_groups)
    return exp_sums[group]


def _brevity_penalty(lengths: np.ndarray) -> np.ndarray:
    """nltk's brevity_penalty(ref_len=len(q_j), hyp_len=len(q_i)) for all pairs i < j.

    1 (an int in nltk) if the hypothesis is longer, else math.exp(1 - r / h). h = 0 only occurs
    with BLEU 0 (no unigram match), where the value is not used. Returns (B*(B-1)/2,) float64.
    """
    unique_len, len_index = np.unique(lengths, return_inverse=True)
    n_len = len(unique_len)
    code = _per_hyp(len_index * n_len) + _per_ref(len_index)
    table = np.ones(n_len * n_len, dtype=np.float64)
    present = np.flatnonzero(np.bincount(code, minlength=n_len * n_len))
    hyp = unique_len[present // n_len].tolist()
    ref = unique_len[present % n_len].tolist()
    table[present] = [math.exp(1 - r / h) if 0 < h <= r else 1.0 for h, r in zip(hyp, ref)]
    return table[code]


def _condensed_bleu_distances(questions: Sequence[str]) -> np.ndarray:
    """1 - BLEU(hyp=q_i, ref=q_j) for i < j in scipy's condensed order, (B*(B-1)/2,) float64; B >= 2."""
    n_docs = len(questions)
    token_ids, lengths = _tokenize(questions)
    code_base = max(1, int(lengths.max())) + 1  # > any den = max(1, #n-grams)
    term_codes = []
    has_unigram_match = np.zeros(0, dtype=bool)
    for n, (doc, gram) in enumerate(_ngram_occurrences(token_ids, lengths), start=1):
        matches = _clipped_matches(doc, gram, n_docs)
        if n == 1:
            has_unigram_match = matches > 0
        # Precision m / den of order n, den = max(1, #n-grams of the hypothesis q_i).
        den = np.maximum(1, lengths - n + 1)
        term_codes.append(matches * code_base + _per_hyp(den))
    # nltk: bp * math.exp(math.fsum(w_i * math.log(p_i))), where bp is the int 1 when the hypothesis
    # is longer and 1 * x == x, so one float multiply reproduces both cases. And BLEU = 0 (not the
    # smoothed value) when no unigram matches, which covers empty hypotheses and references.
    bleu = _brevity_penalty(lengths) * _exp_fsum_per_row(term_codes, code_base)
    bleu[~has_unigram_match] = 0.0
    return 1.0 - bleu


def bleu_distance_matrix(questions: Sequence[str]) -> np.ndarray:
    """Pairwise BLEU distances, bit-identical to the authors' nltk loop.

    Returns (B, B) float64: d[i, j] = d[j, i] = 1 - BLEU(hyp=q_i, ref=q_j) for i < j, d[i, i] = 0.
    Empty questions have BLEU 0 with everything (distance 1), themselves included.
    """
    if len(questions) < 2:
        return np.zeros((len(questions), len(questions)), dtype=np.float64)
    return squareform(_condensed_bleu_distances(questions), checks=False)


# ----------------------------------------------------------------------------- clustering


def _cut_tree(merges: np.ndarray, n_leaves: int, distance_threshold: float) -> np.ndarray:
    """Flat clusters of a scipy linkage matrix, cut exactly as sklearn does.

    sklearn sets n_clusters = #(merge distances >= threshold) + 1 and ``_hc_cut`` then undoes the
    n_clusters - 1 merges with the largest node ids, i.e. the last rows of the linkage matrix. So
    the clusters are the components of the first n - n_clusters rows (with average linkage these
    are exactly the merges at distance < threshold: merging continues while d < threshold).
    Returns (n,) int64 labels numbered by first appearance.
    """
    n_split = int(np.count_nonzero(merges[:, 2] >= distance_threshold))
    kept = merges[: n_leaves - 1 - n_split, :2].astype(np.int64)
    parent = np.arange(2 * n_leaves - 1, dtype=np.int64)
    new_nodes = n_leaves + np.arange(len(kept), dtype=np.int64)
    parent[kept[:, 0]] = new_nodes
    parent[kept[:, 1]] = new_nodes
    while True:  # pointer jumping to the root of each leaf's tree: O(log depth) passes
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent = grand
    return _canonical_labels(parent[:n_leaves])


def _canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel so clusters are numbered 0, 1, ... in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def cluster_labels(
    questions: Sequence[str], distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD
) -> np.ndarray:
    """Average-linkage clusters of the questions under BLEU distance; (B,) int64 labels.

    Same partition as sklearn ``AgglomerativeClustering(n_clusters=None, metric="precomputed",
    linkage="average", distance_threshold=...)`` on ``bleu_distance_matrix``; labels are numbered
    by first appearance (sklearn's own numbering differs, the partition does not).
    """
    n = len(questions)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    # The same call sklearn makes on the same condensed vector, so the same merge tree.
    merges = linkage(_condensed_bleu_distances(questions), method="average")
    return _cut_tree(merges, n, distance_threshold)


def _cluster_share(labels: np.ndarray) -> np.ndarray:
    if len(labels) == 0:
        return np.zeros(0, dtype=np.float64)
    return np.bincount(labels)[labels] / len(labels)


def repetition_penalty(
    questions: Sequence[str], distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD
) -> np.ndarray:
    """penalty_i = |cluster(i)| / B for each question; (B,) float64 in (0, 1].

    B = 0 gives an empty array, B = 1 gives [1.0]. Invalid Challenger outputs are passed as "" and
    take part like any question (an empty string is at distance 1 from everything).
    """
    return _cluster_share(cluster_labels(questions, distance_threshold))


def same_partition(labels_a: np.ndarray, labels_b: np.ndarray) -> bool:
    """True if two labelings define the same partition (equal up to renaming the labels)."""
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    if a.shape != b.shape:
        return False
    if a.size == 0:
        return True
    n_pairs = len(np.unique(np.stack([a, b], axis=1), axis=0))
    return n_pairs == len(np.unique(a)) == len(np.unique(b))


# ----------------------------------------------------------------------------- references


def reference_bleu_distance_matrix(questions: Sequence[str]) -> np.ndarray:
    """The authors' way: nltk ``sentence_bleu`` pair by pair (slow, O(B^2) Python calls).

    Returns (B, B) float64 with d[i, j] = d[j, i] = 1 - BLEU(hyp=q_i, ref=q_j) for i < j.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoother = SmoothingFunction(epsilon=_EPSILON).method1
    tokens = [q.split() for q in questions]
    n = len(questions)
    dist = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            score = sentence_bleu(
                [tokens[j]], tokens[i], weights=(_WEIGHT,) * MAX_ORDER, smoothing_function=smoother
            )
            dist[i, j] = dist[j, i] = 1 - score
    return dist


def reference_cluster_labels(
    questions: Sequence[str], distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD
) -> np.ndarray:
    """sklearn AgglomerativeClustering on ``reference_bleu_distance_matrix``; (B,) int labels."""
    n = len(questions)
    if n < 2:  # sklearn refuses fewer than 2 samples; one question is its own cluster
        return np.zeros(n, dtype=np.int64)
    from sklearn.cluster import AgglomerativeClustering

    clustering = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=distance_threshold
    )
    return clustering.fit_predict(reference_bleu_distance_matrix(questions))


def reference_repetition_penalty(
    questions: Sequence[str], distance_threshold: float = DEFAULT_DISTANCE_THRESHOLD
) -> np.ndarray:
    """The authors' penalty: cluster size / B from ``reference_cluster_labels``; (B,) float64."""
    labels = reference_cluster_labels(questions, distance_threshold)
    sizes = Counter(labels.tolist())
    return np.asarray([sizes[label] / len(questions) for label in labels.tolist()], dtype=np.float64)
