/* The router's hot path in C: from a prompt's text to the gate's hits and the MLP's
 * logits, for one prompt or many. It computes exactly what llmlib/router.py defines
 * (FEATURE_VERSION 2): the first 2,048 characters lower-cased and split on whitespace, the
 * first max_words (at most 128) words each cut to 32 characters; crc32("w:" + word),
 * crc32("c:" + gram) for the character 3- and 4-grams of "<" + word + ">" (characters are
 * code points: UTF-8 sequences), crc32("s:" + shape) for the word's shape unless it is "a"
 * (ASCII digits as 9, letters as a by Python's str.isalpha, runs of either as one, other
 * code points kept), and the bigram mix ((crc(w1) * 0x9E3779B1) mod 2^32) ^
 * crc(w2), each modulo the bucket count.
 *
 * Text that is ASCII in its first 2,048 characters (most prompts) is lower-cased and split
 * here byte by byte (Python's whitespace in ASCII: \t \n \v \f \r, 0x1C-0x1F, space);
 * other text is lower-cased and split by Python's own str methods, called from here, so
 * Unicode casing is Python's. A word that is not valid UTF-8 (a lone surrogate) makes a
 * call hand the prompt back to Python (None, or code 255 in a batch).
 *
 * Each model with an int8 table keeps a word cache: per distinct word of at most 32 bytes,
 * the sum of its feature rows (int16: exact), its feature count and its lexicon row, so a
 * word seen before costs one hash of its bytes, one look-up and one row add. Calls hold the
 * GIL throughout, which is what makes the cache safe to share between threads.
 *
 * Sped up without changing a result (each step measured, BENCHMARKS.md, session 22): the
 * bucket modulo by multiplication; the MLP's hidden units held in registers 16 at a time;
 * the lexicon's columns that are zero in every lexicon row (29 of 32 in the shipped
 * artifact) left out of the sums and the MLP, the live ones kept in a cache entry's head
 * (two cache lines a word, not three); AVX2 clones of the hot functions on x86-64.
 *
 * make_model(table, scale, w1, b1, w2, b2[, lex_keys]) -> a capsule holding the arrays'
 *     buffers; with lex_keys (uint32, ascending: lexicon.py's keys), the table's last
 *     len(lex_keys) rows are the lexicon's: each word whose key (crc32("w:" + word), its
 *     ASCII punctuation stripped from both ends) is there adds its row to a second mean,
 *     which the MLP reads after the first (w1 then has 2 * dim rows)
 * make_gate(keywords: dict[str, rule], regex_rules: int, experts: list[int]) -> a capsule
 * route_text(text, model, gate | None, max_words) -> None (Python must) or
 *     (rules hit as a bit mask, probabilities or None, entropy)
 * route_many(texts, model, gate | None, threshold, default, max_words, probs | None) ->
 *     (expert per prompt, source per prompt) as bytes, 255 where Python must decide; the
 *     probabilities into probs (n x k float32) where the MLP decided
 * embed_probs(words, model) -> (probabilities, entropy) or None
 * words(text, max_words) -> the words as split here (for tests), or None
 * gate_hits(words, keyword_set) -> keywords hit, exactly or with punctuation stripped
 * Arrays, C-contiguous: table (buckets, dim) int8 (rows summed as integers, then times
 * scale (dim) once: a row is one 32-byte cache line) or float32 (scale ignored); float32
 * w1 (dim, hidden), b1 (hidden), w2 (hidden, k), b2 (k).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
/* -DLLMLIB_ROUTER_PORTABLE: no SSE2 split, no AVX2 clones (what other processors build;
 * tests/unit/test_router_portable.py builds it so and compares) */
#if defined(__SSE2__) && !defined(LLMLIB_ROUTER_PORTABLE)
#define SPLIT_SSE2 1
#include <emmintrin.h>
#endif

#define MAX_CHARS 2048
#define MAX_WORDS 128
#define MAX_WORD_CHARS 32
#define WORD_BYTES (4 * MAX_WORD_CHARS)
#define CACHE_WORD 32   /* words of at most this many bytes are cached */
#define LEX_INLINE 8    /* a lexicon of at most this many live columns: in a cache entry's head */
#define PYTHON_MUST 255 /* route_many: this prompt goes back to Python */

/* the hot functions twice on x86-64 with glibc: for AVX2 (8 int16s widened, 8 floats, per
 * instruction) and for any x86-64, the loader picking one for the CPU at hand (no FMA: the
 * float sums round as the plain build's do) */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(LLMLIB_ROUTER_PORTABLE)
#define HOT __attribute__((target_clones("avx2", "default")))
#else
#define HOT
#endif

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* zlib's crc32 continued from ``crc`` (a finished crc32 value, as zlib.crc32(data, crc)) */
static uint32_t crc_more(uint32_t crc, const unsigned char *p, Py_ssize_t n) {
    crc = ~crc;
    for (Py_ssize_t i = 0; i < n; i++) crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static uint32_t CRC_W, CRC_C, CRC_S; /* crc32("w:"), crc32("c:"), crc32("s:") */

/* a quick 64-bit hash of a word's bytes, for look-ups only (the cache and the gate; the
 * features are crc32s): 8 bytes at a time, multiply and fold. ``p`` must have 8 readable
 * bytes past ``n`` (Words.buf has them; bytes past n are masked out) */
static inline uint64_t quick_hash(const unsigned char *p, Py_ssize_t n) {
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)n, v;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&v, p + i, 8);
        x = (x ^ v) * 0xBF58476D1CE4E5B9ull;
        x ^= x >> 31;
    }
    if (i < n) {
        memcpy(&v, p + i, 8);
        v &= ~(uint64_t)0 >> (8 * (8 - (n - i)));
        x = (x ^ v) * 0x94D049BB133111EBull;
        x ^= x >> 29;
    }
    return x;
}

typedef struct {
    const float *table;    /* float32 rows, or NULL with q set */
    const int8_t *q;       /* int8 rows (summed as integers, scaled once at the end) */
    const float *scale;    /* per-column scales of q */
    Py_ssize_t buckets, dim;
    const float *w1, *b1, *w2, *b2;
    Py_ssize_t hidden, k;
    const uint32_t *lex; /* the lexicon's keys, sorted (rows buckets.. of the table), or NULL */
    Py_ssize_t nlex;
    Py_ssize_t in; /* the MLP's input: dim, or 2 * dim with a lexicon (its rows' own mean) */
    /* the lexicon's live columns: those some lexicon row is not zero in (the others add
     * nothing to the second mean, nor through it to the MLP: left out of both) */
    Py_ssize_t live[1024], nlive;
    float *w1p, *b1p; /* the MLP's w1 (the hashed rows' then the live columns' inputs) and b1,
                       * hidden padded to hp (a multiple of 16) by zeros */
    float *w2t;       /* w2 transposed (k rows of hp), zeros after hidden */
    Py_ssize_t hp, in_c;
    uint64_t bucket_m; /* 2^64 / buckets, rounded up: bucket_of's multiplier */
} Model;

/* ``b`` modulo the bucket count, by two multiplications instead of a division (Lemire,
 * Kaser and Kurz, "Faster remainder by direct computation", 2019: exact for every 32-bit b) */
static inline uint32_t bucket_of(const Model *m, uint32_t b) {
#ifdef __SIZEOF_INT128__
    return (uint32_t)(((__uint128_t)(m->bucket_m * b) * (uint64_t)m->buckets) >> 64);
#else
    return b % (uint32_t)m->buckets;
#endif
}

/* add row ``r`` of the table (no modulo: a hashed bucket, or a lexicon row after them) to
 * the accumulator (int32 for an int8 table) */
static inline void add_row_at(const Model *m, Py_ssize_t r, float *acc, int32_t *acci) {
    Py_ssize_t off = r * m->dim;
    if (m->q != NULL) {
        const int8_t *row = m->q + off;
        if (m->dim == 32) /* the shipped width: a loop of fixed length, unrolled */
            for (int d = 0; d < 32; d++) acci[d] += row[d];
        else
            for (Py_ssize_t d = 0; d < m->dim; d++) acci[d] += row[d];
    } else {
        const float *row = m->table + off;
        for (Py_ssize_t d = 0; d < m->dim; d++) acc[d] += row[d];
    }
}

/* add the row of hash ``b``: its bucket, ``b`` modulo the bucket count */
static inline void add_row(const Model *m, uint32_t b, float *acc, int32_t *acci) {
    add_row_at(m, (Py_ssize_t)bucket_of(m, b), acc, acci);
}

/* lexicon.py's LEX_PUNCT, stripped from a word's ends before it is looked up */
static inline int lex_punct(unsigned char c) {
    return c != 0 && strchr("()[]{}<>\"'.,;:!?", c) != NULL;
}

/* the lexicon row of word (w, n) (its crc ``h`` given), or -1 */
static Py_ssize_t lex_row(const Model *m, const unsigned char *w, Py_ssize_t n, uint32_t h) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi && lex_punct(w[lo])) lo++;
    while (hi > lo && lex_punct(w[hi - 1])) hi--;
    if (lo == hi) return -1;
    uint32_t key = (lo == 0 && hi == n) ? h : crc_more(CRC_W, w + lo, hi - lo);
    Py_ssize_t a = 0, b = m->nlex;
    while (a < b) {
        Py_ssize_t mid = a + (b - a) / 2;
        if (m->lex[mid] < key) a = mid + 1;
        else b = mid;
    }
    return (a < m->nlex && m->lex[a] == key) ? m->buckets + a : -1;
}

/* sum of the feature rows of one word (its crc ``h`` given) into acc or acci; returns
 * the feature count */
HOT static Py_ssize_t add_word(const Model *m, const unsigned char *w, Py_ssize_t n, uint32_t h,
                           float *acc, int32_t *acci) {
    Py_ssize_t count = 1;
    add_row(m, h, acc, acci);
    /* "<" + word + ">" and the byte offset where each code point starts */
    unsigned char buf[WORD_BYTES + 2];
    Py_ssize_t starts[WORD_BYTES + 3];
    buf[0] = '<';
    memcpy(buf + 1, w, (size_t)n);
    buf[n + 1] = '>';
    Py_ssize_t len = n + 2, cps = 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if ((buf[i] & 0xC0) != 0x80) starts[cps++] = i;
    starts[cps] = len;
    /* the 3-grams' crcs, and each 4-gram's as its 3-gram's carried on by one code point;
     * then their rows, all 3-grams first (the float sums' order) */
    uint32_t tri[WORD_BYTES + 2], quad[WORD_BYTES + 2];
    for (Py_ssize_t i = 0; i + 3 <= cps; i++) {
        tri[i] = crc_more(CRC_C, buf + starts[i], starts[i + 3] - starts[i]);
        if (i + 4 <= cps) quad[i] = crc_more(tri[i], buf + starts[i + 3], starts[i + 4] - starts[i + 3]);
    }
    for (Py_ssize_t i = 0; i + 3 <= cps; i++) add_row(m, tri[i], acc, acci);
    for (Py_ssize_t i = 0; i + 4 <= cps; i++) add_row(m, quad[i], acc, acci);
    count += (cps >= 3 ? cps - 2 : 0) + (cps >= 4 ? cps - 3 : 0);
    /* the shape (features.py's word_shape), never longer than the word's bytes */
    unsigned char shape[WORD_BYTES];
    Py_ssize_t sl = 0;
    for (Py_ssize_t i = 1; i + 1 < cps; i++) { /* the code points between "<" and ">" */
        const unsigned char *p = buf + starts[i];
        Py_ssize_t bl = starts[i + 1] - starts[i];
        unsigned char c = 0;
        if (bl == 1 && p[0] >= '0' && p[0] <= '9') c = '9';
        else if (bl == 1 && ((p[0] | 0x20) >= 'a' && (p[0] | 0x20) <= 'z')) c = 'a';
        else if (bl > 1) {
            Py_UCS4 ch = bl == 2 ? ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu)
                       : bl == 3 ? ((p[0] & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu)
                                 : ((p[0] & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) |
                                       ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
            if (Py_UNICODE_ISALPHA(ch)) c = 'a';
        }
        if (c != 0) {
            if (!(sl > 0 && shape[sl - 1] == c)) shape[sl++] = c;
        } else {
            memcpy(shape + sl, p, (size_t)bl);
            sl += bl;
        }
    }
    if (!(sl == 1 && shape[0] == 'a')) {
        add_row(m, crc_more(CRC_S, shape, sl), acc, acci);
        count++;
    }
    return count;
}

/* --- the word cache (int8 tables) ------------------------------------------------------
 * An entry is a 64-byte header (the word's crc, its bytes, its feature count) followed by
 * the sum of its feature rows as int16 (at most 64 features of at most 127: exact), so a
 * hit reads two neighbouring cache lines. Open addressing on the crc; cleared when 3/4
 * full (bounded memory, not an LRU). Float tables are not cached (summed per feature). */
typedef struct {
    uint64_t key; /* quick_hash of the word */
    uint32_t h;   /* crc32("w:" + word), for its bigrams */
    int32_t lex;  /* its lexicon row, or -1 */
    uint16_t count;
    uint8_t len, used;
    unsigned char bytes[CACHE_WORD];
    int8_t lexv[LEX_INLINE]; /* its lexicon row's live columns, where there are this few */
    uint16_t gate_epoch;     /* gate_r is the answer of the cache's gate of this epoch (0: none) */
    int8_t gate_r;           /* the gate's rule for the word (gate_code), as last asked */
} Slot;
_Static_assert(sizeof(Slot) <= 64, "a cache entry's head is one cache line");

typedef struct {
    unsigned char *mem;
    size_t cap, n, stride;
    uint64_t gate;   /* the serial of the gate its entries' gate_r answer for */
    uint16_t epoch;  /* gate_epoch of an entry whose gate_r is that gate's (never 0) */
    size_t slots;    /* entries asked for (cache_slots; 0: as many as fit 16 MiB, <= 65,536) */
} Cache;

static void cache_free(Cache *c) {
    free(c->mem);
    memset(c, 0, sizeof(Cache));
}

static inline Slot *slot_at(const Cache *c, size_t i) {
    return (Slot *)(c->mem + i * c->stride);
}

static inline const int16_t *slot_sums(const Slot *s) {
    return (const int16_t *)((const unsigned char *)s + 64);
}

/* whether a cached word's bytes (CACHE_WORD of them) start with w[:n] (n <= CACHE_WORD; w
 * may be read up to 7 bytes past n: Words.buf has room) */
static inline int same_bytes(const unsigned char *cached, const unsigned char *w, Py_ssize_t n) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (Py_ssize_t k = 0; k < n; k += 8) { /* 8 bytes at a time, the last ones masked */
        uint64_t a, b;
        memcpy(&a, cached + k, 8);
        memcpy(&b, w + k, 8);
        uint64_t d = a ^ b;
        if (n - k < 8) d &= ~(uint64_t)0 >> (8 * (8 - (n - k)));
        if (d) return 0;
    }
    return 1;
#else
    return memcmp(cached, w, (size_t)n) == 0;
#endif
}

/* the entry of word (w, n) with quick hash ``key``, filled on a miss; NULL when the word
 * is not cached (a float table, a word over 32 bytes, or no memory: the caller then sums
 * its rows itself) */
static const Slot *cache_get(const Model *m, Cache *c, const unsigned char *w, Py_ssize_t n,
                             uint64_t key) {
    if (n > CACHE_WORD || m->q == NULL) return NULL;
    if (c->mem == NULL) { /* first use: sums, then (with a lexicon) the word's lexicon row */
        size_t lexb = m->nlex > 0 && m->nlive > LEX_INLINE ? (size_t)m->dim : 0;
        size_t stride = (64 + (size_t)m->dim * sizeof(int16_t) + lexb + 63) & ~(size_t)63;
        size_t cap = c->slots ? c->slots : 1u << 16;
        while (!c->slots && cap > 1024 && cap * stride > (16u << 20)) cap >>= 1;
        c->mem = aligned_alloc(64, cap * stride);
        if (c->mem == NULL) return NULL;
        for (size_t i = 0; i < cap; i++) {
            Slot *s = (Slot *)(c->mem + i * stride);
            s->used = 0;
            s->gate_epoch = 0;
        }
        c->cap = cap;
        c->stride = stride;
        c->n = 0;
    }
    size_t mask = c->cap - 1, i = key & mask;
    for (;;) {
        Slot *s = slot_at(c, i);
        if (!s->used) break;
        if (s->key == key && s->len == n && same_bytes(s->bytes, w, n)) return s;
        i = (i + 1) & mask;
    }
    if (c->n >= c->cap - c->cap / 4) { /* full: start again */
        for (size_t j = 0; j < c->cap; j++) slot_at(c, j)->used = 0;
        c->n = 0;
        i = key & mask;
    }
    Slot *s = slot_at(c, i);
    int32_t acci[1024];
    memset(acci, 0, sizeof(int32_t) * (size_t)m->dim);
    uint32_t h = crc_more(CRC_W, w, n);
    Py_ssize_t count = add_word(m, w, n, h, NULL, acci);
    int16_t *sums = (int16_t *)((unsigned char *)s + 64);
    for (Py_ssize_t d = 0; d < m->dim; d++) sums[d] = (int16_t)acci[d];
    s->used = 1;
    s->key = key;
    s->h = h;
    s->lex = m->nlex > 0 ? (int32_t)lex_row(m, w, n, h) : -1;
    memset(s->lexv, 0, sizeof(s->lexv));
    if (s->lex >= 0 && m->nlive <= LEX_INLINE) /* its live columns in the head, zeros after */
        for (Py_ssize_t j = 0; j < m->nlive; j++)
            s->lexv[j] = m->q[(size_t)s->lex * (size_t)m->dim + (size_t)m->live[j]];
    else if (s->lex >= 0) /* a copy of its row beside the sums: no look-up in the big table */
        memcpy((unsigned char *)s + 64 + (size_t)m->dim * sizeof(int16_t),
               m->q + (size_t)s->lex * (size_t)m->dim, (size_t)m->dim);
    s->len = (uint8_t)n;
    s->count = (uint16_t)count;
    s->gate_epoch = 0; /* the gate not asked yet */
    memcpy(s->bytes, w, (size_t)n);
    c->n++;
    return s;
}

/* the entry of word (w, n) with quick hash ``key`` where the cache holds it, else NULL (then
 * cache_get): the look-up alone, inline in the word loop */
static inline const Slot *cache_find(const Cache *c, const unsigned char *w, Py_ssize_t n,
                                     uint64_t key) {
    if (n > CACHE_WORD || c->mem == NULL) return NULL;
    size_t mask = c->cap - 1, i = key & mask;
    for (;;) {
        const Slot *s = slot_at(c, i);
        if (!s->used) return NULL;
        if (s->key == key && s->len == n && same_bytes(s->bytes, w, n)) return s;
        i = (i + 1) & mask;
    }
}

/* start fetching the lines a word's look-up will read */
static inline void cache_prefetch(const Cache *c, uint64_t key) {
    if (c->mem != NULL) {
        const unsigned char *p = c->mem + (key & (c->cap - 1)) * c->stride;
        __builtin_prefetch(p);
        __builtin_prefetch(p + 64);
        if (c->stride > 128) __builtin_prefetch(p + 128);
    }
}

/* --- a model: its arrays' buffers held (and released) by a capsule, with its cache ----- */
typedef struct {
    Py_buffer t, s, w1, b1, w2, b2, lk;
    int n, has_lk;
} Bufs;

typedef struct {
    Model m;
    Bufs bf;
    Cache cache;
} Held;

/* --- the gate: keyword -> rule, by quick_hash(keyword) ---------------------------------- */
typedef struct {
    uint64_t h;
    int32_t rule; /* -1: empty */
    Py_ssize_t off, len;
} GEntry;

typedef struct {
    GEntry *e;
    size_t cap;
    unsigned char *arena;
    uint64_t lens;         /* bit n: some keyword is n bytes long (bit 63: 63 or more) */
    uint64_t first[4], last[4]; /* the bytes keywords start and end with */
    uint64_t regex;        /* rules with a regex: Python decides when one is hit first */
    uint8_t expert[64];    /* the expert index of each of the first 64 rules */
    int rules;
    uint64_t serial; /* this gate's number (from 1), which word caches know it by */
} Gate;

static uint64_t gates_made; /* (the GIL guards it, as every call here) */

/* whether (w, n) could be a keyword: its length, first and last bytes (no look-up else) */
static inline int gate_may(const Gate *g, const unsigned char *w, Py_ssize_t n) {
    return n > 0 && ((g->lens >> (n < 63 ? n : 63)) & 1) && ((g->first[w[0] >> 6] >> (w[0] & 63)) & 1) &&
           ((g->last[w[n - 1] >> 6] >> (w[n - 1] & 63)) & 1);
}

/* the rule of keyword (w, n) with quick hash h, or -1 */
static int gate_rule(const Gate *g, const unsigned char *w, Py_ssize_t n, uint64_t h) {
    if (!gate_may(g, w, n)) return -1;
    size_t mask = g->cap - 1, i = h & mask;
    for (;;) {
        const GEntry *e = &g->e[i];
        if (e->rule < 0) return -1;
        if (e->h == h && e->len == n && memcmp(g->arena + e->off, w, (size_t)n) == 0)
            return e->rule;
        i = (i + 1) & mask;
    }
}

/* the gate's punctuation, stripped from a word's ends before its second look-up:
 * ()[]{}<>"'.,;:!? and the curly quotes U+201C/D, U+2018/9 (E2 80 9C/9D/98/99) */
static unsigned char PUNCT[256];

static inline int punct_byte(unsigned char c) {
    return PUNCT[c];
}

static int curly_at(const unsigned char *p, Py_ssize_t avail) {
    return avail >= 3 && p[0] == 0xE2 && p[1] == 0x80 &&
           (p[2] == 0x9C || p[2] == 0x9D || p[2] == 0x98 || p[2] == 0x99);
}

/* no punctuation at either end of (w, n): nothing to strip (a curly quote starts with E2) */
static inline int bare_word(const unsigned char *w, Py_ssize_t n) {
    return n > 0 && !punct_byte(w[0]) && w[0] != 0xE2 && !punct_byte(w[n - 1]) &&
           !(n >= 3 && w[n - 3] == 0xE2);
}

/* the rule one word hits (as it is, else stripped; quick hash ``h``): -1 for none, the rule
 * for the first 64, GATE_PYTHON for a later one (Python decides) */
#define GATE_PYTHON 64
static int gate_code(const Gate *g, const unsigned char *w, Py_ssize_t n, uint64_t h) {
    /* most words: no keyword's length and ends, nothing to strip */
    if (!gate_may(g, w, n) && bare_word(w, n)) return -1;
    int r = gate_rule(g, w, n, h);
    if (r < 0) {
        if (bare_word(w, n)) return -1;
        Py_ssize_t lo = 0, hi = n;
        for (;;) {
            if (lo < hi && punct_byte(w[lo])) lo++;
            else if (curly_at(w + lo, hi - lo)) lo += 3;
            else break;
        }
        for (;;) {
            if (hi > lo && punct_byte(w[hi - 1])) hi--;
            else if (hi - lo >= 3 && curly_at(w + hi - 3, 3)) hi -= 3;
            else break;
        }
        if ((lo == 0 && hi == n) || !gate_may(g, w + lo, hi - lo)) return -1;
        r = gate_rule(g, w + lo, hi - lo, quick_hash(w + lo, hi - lo));
        if (r < 0) return -1;
    }
    return r >= 64 ? GATE_PYTHON : r;
}

/* the cache's epoch for gate ``g``: a new one when the cache last served another gate
 * (an entry's gate_r then reads as not asked); at the epochs' wrap, every entry's is reset */
static uint16_t gate_epoch_of(Cache *c, const Gate *g) {
    if (c->gate != g->serial) {
        c->gate = g->serial;
        if (++c->epoch == 0) {
            for (size_t j = 0; c->mem != NULL && j < c->cap; j++) slot_at(c, j)->gate_epoch = 0;
            c->epoch = 1;
        }
    }
    return c->epoch;
}

/* --- words ----------------------------------------------------------------------------- */
typedef struct {
    unsigned char buf[MAX_WORDS * WORD_BYTES + 8]; /* (+8: quick_hash reads 8 at a time) */
    Py_ssize_t off[MAX_WORDS], len[MAX_WORDS];
    uint64_t key[MAX_WORDS]; /* quick hashes */
    uint32_t h[MAX_WORDS];   /* crc32("w:" + word) */
    Py_ssize_t n;
} Words;

/* per byte: 1 for Python's ASCII whitespace (\t \n \v \f \r, 0x1C-0x1F, space); and its
 * lower case (ASCII letters only: other bytes as they are) */
static unsigned char SPACE[256], LOWER[256];

static inline int ascii_space(unsigned char c) {
    return SPACE[c];
}

/* Python's str.isspace(): the ASCII set, else Python's own test, skipped for the ranges
 * holding no whitespace (none in 0xA1-0x167F or above 0x3000; the tests check every code
 * point against str.split) */
static inline int uspace(Py_UCS4 ch) {
    if (ch < 128) return ascii_space((unsigned char)ch);
    if ((ch > 0xA0 && ch < 0x1680) || ch > 0x3000) return 0;
    return Py_UNICODE_ISSPACE(ch);
}

/* add a word (UTF-8, already cut) to ws; 1 when it is not valid UTF-8 */
static int push_word(Words *ws, PyObject *word) {
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(word, &n);
    if (u == NULL) { /* a lone surrogate: leave it to Python */
        PyErr_Clear();
        return 1;
    }
    if (n > WORD_BYTES) return 1;
    Py_ssize_t at = ws->n ? ws->off[ws->n - 1] + ws->len[ws->n - 1] : 0;
    memcpy(ws->buf + at, u, (size_t)n);
    ws->off[ws->n] = at;
    ws->len[ws->n] = n;
    ws->n++;
    return 0;
}

/* words of a list of str (already prepared by Python): 0, 1 (Python must), -1 error */
static int words_from_list(PyObject *list, Words *ws) {
    ws->n = 0;
    Py_ssize_t nw = PyList_GET_SIZE(list);
    if (nw > MAX_WORDS) return 1;
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *w = PyList_GET_ITEM(list, i);
        if (!PyUnicode_Check(w)) {
            PyErr_SetString(PyExc_TypeError, "words must be str");
            return -1;
        }
        if (push_word(ws, w)) return 1;
    }
    return 0;
}

/* the words of ASCII text s[:L] (L <= MAX_CHARS), at most max_words, each cut to
 * MAX_WORD_CHARS */
#ifdef SPLIT_SSE2
/* 16 bytes at a time: the text lower-cased into ws->buf at its own positions (words point
 * into it), and a bit per character, set for whitespace, 64 characters a block, each block
 * made when the scan first reaches it (a long text's tail past max_words is never read) */
typedef struct {
    const unsigned char *s;
    unsigned char *out;
    Py_ssize_t L, made;
    uint64_t space[MAX_CHARS / 64 + 1];
} AsciiScan;

static inline uint64_t space_block(AsciiScan *a, Py_ssize_t b) {
    while (a->made <= b) {
        Py_ssize_t at = a->made * 64;
        uint64_t bits = 0;
        const __m128i flip = _mm_set1_epi8((char)0x80), sp = _mm_set1_epi8(' ');
        for (int c = 0; c < 4; c++, at += 16) {
            __m128i v;
            if (at + 16 <= a->L) {
                v = _mm_loadu_si128((const __m128i *)(a->s + at));
            } else { /* the text's last bytes: never read past its end */
                unsigned char tmp[16] = {0};
                if (at < a->L) memcpy(tmp, a->s + at, (size_t)(a->L - at));
                v = _mm_loadu_si128((const __m128i *)tmp);
            }
            /* x - lo < n, unsigned, as a signed compare with the top bits flipped */
            __m128i upper = _mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(v, _mm_set1_epi8('A')), flip),
                                           _mm_set1_epi8((char)(26 - 128)));
            __m128i ws = _mm_or_si128(
                _mm_cmpeq_epi8(v, sp),
                _mm_or_si128(_mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(v, _mm_set1_epi8(9)), flip),
                                            _mm_set1_epi8((char)(5 - 128))),
                             _mm_cmplt_epi8(_mm_xor_si128(_mm_sub_epi8(v, _mm_set1_epi8(0x1C)), flip),
                                            _mm_set1_epi8((char)(4 - 128)))));
            _mm_storeu_si128((__m128i *)(a->out + at),
                             _mm_add_epi8(v, _mm_and_si128(upper, _mm_set1_epi8(0x20))));
            bits |= (uint64_t)(uint16_t)_mm_movemask_epi8(ws) << (16 * c);
        }
        Py_ssize_t past = a->L - a->made * 64; /* characters of this block in the text */
        if (past < 64) bits |= ~(uint64_t)0 << past; /* beyond the text: whitespace */
        a->space[a->made++] = bits;
    }
    return a->space[b];
}

static void split_ascii(const unsigned char *s, Py_ssize_t L, Py_ssize_t max_words, Words *ws) {
    AsciiScan a;
    a.s = s;
    a.out = ws->buf;
    a.L = L;
    a.made = 0;
    /* per block, words start where a word character follows whitespace (or the text's
     * start) and end at the whitespace after one: both as bits, walked in order */
    Py_ssize_t nb = (L + 63) / 64, start = 0;
    uint64_t carry = 0; /* 1: the character before this block's first is a word's */
    for (Py_ssize_t b = 0; b < nb; b++) {
        uint64_t space = space_block(&a, b), word = ~space;
        uint64_t before = (word << 1) | carry; /* bit i: character i - 1 is a word's */
        uint64_t ev = (word & ~before) | (space & before);
        carry = word >> 63;
        while (ev) {
            int t = __builtin_ctzll(ev);
            ev &= ev - 1;
            Py_ssize_t at = b * 64 + t;
            if ((word >> t) & 1) { /* a start */
                start = at;
                continue;
            }
            ws->off[ws->n] = start; /* an end */
            ws->len[ws->n] = at - start < MAX_WORD_CHARS ? at - start : MAX_WORD_CHARS;
            if (++ws->n >= max_words) return;
        }
    }
    if (carry) { /* the last word runs to the text's end (L a multiple of 64) */
        ws->off[ws->n] = start;
        ws->len[ws->n] = L - start < MAX_WORD_CHARS ? L - start : MAX_WORD_CHARS;
        ws->n++;
    }
}
#else
static void split_ascii(const unsigned char *s, Py_ssize_t L, Py_ssize_t max_words, Words *ws) {
    Py_ssize_t i = 0, at = 0;
    while (ws->n < max_words) {
        while (i < L && ascii_space(s[i])) i++;
        if (i >= L) break;
        Py_ssize_t b = i;
        while (i < L && !ascii_space(s[i])) i++;
        Py_ssize_t n = i - b < MAX_WORD_CHARS ? i - b : MAX_WORD_CHARS;
        for (Py_ssize_t k = 0; k < n; k++) ws->buf[at + k] = LOWER[s[b + k]];
        ws->off[ws->n] = at;
        ws->len[ws->n] = n;
        ws->n++;
        at += n;
    }
}
#endif

/* the words of text of one ``kind`` (a constant where it is inlined: one loop per kind),
 * code point by code point: 0, 1 (a lone surrogate: Python must), 2 (U+0130 or U+03A3
 * inside a word taken: Python's str methods must) */
static inline __attribute__((always_inline)) int split_kind(int kind, const void *data,
                                                            Py_ssize_t L, Py_ssize_t max_words,
                                                            Words *ws) {
    int special = 0;
    Py_ssize_t i = 0, at = 0;
    while (ws->n < max_words && !special) {
        while (i < L && uspace(PyUnicode_READ(kind, data, i))) i++;
        if (i >= L) break;
        Py_ssize_t start = at, cps = 0;
        for (; i < L; i++) {
            Py_UCS4 ch = PyUnicode_READ(kind, data, i);
            if (ch < 0x80) { /* most of most texts: one look-up each for space and case */
                if (SPACE[ch]) break;
                if (cps == MAX_WORD_CHARS) continue;
                cps++;
                ws->buf[at++] = LOWER[ch];
                continue;
            }
            if (uspace(ch)) break;
            if (ch == 0x130 || ch == 0x3A3) {
                special = 1;
                break;
            }
            if (cps == MAX_WORD_CHARS) continue;
            cps++;
            unsigned char *o = ws->buf + at;
            ch = Py_UNICODE_TOLOWER(ch);
            if (ch < 0x80) {
                o[0] = (unsigned char)ch;
                at += 1;
            } else if (ch < 0x800) {
                o[0] = (unsigned char)(0xC0 | (ch >> 6));
                o[1] = (unsigned char)(0x80 | (ch & 0x3F));
                at += 2;
            } else if (ch >= 0xD800 && ch <= 0xDFFF) {
                return 1; /* a lone surrogate: not UTF-8, Python decides */
            } else if (ch < 0x10000) {
                o[0] = (unsigned char)(0xE0 | (ch >> 12));
                o[1] = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
                o[2] = (unsigned char)(0x80 | (ch & 0x3F));
                at += 3;
            } else {
                o[0] = (unsigned char)(0xF0 | (ch >> 18));
                o[1] = (unsigned char)(0x80 | ((ch >> 12) & 0x3F));
                o[2] = (unsigned char)(0x80 | ((ch >> 6) & 0x3F));
                o[3] = (unsigned char)(0x80 | (ch & 0x3F));
                at += 4;
            }
        }
        if (special) break;
        ws->off[ws->n] = start;
        ws->len[ws->n] = at - start;
        ws->n++;
    }
    return special ? 2 : 0;
}

/* words of a prompt, as router.prepare makes them: 0, 1 (Python must), -1 error */
static int words_from_text(PyObject *text, Py_ssize_t max_words, Words *ws) {
    ws->n = 0;
    if (max_words > MAX_WORDS) max_words = MAX_WORDS;
    if (max_words <= 0) return 0;
    Py_ssize_t L = PyUnicode_GET_LENGTH(text);
    if (L > MAX_CHARS) L = MAX_CHARS;
    int ascii = PyUnicode_IS_ASCII(text);
    if (!ascii && PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND) {
        const Py_UCS1 *s = PyUnicode_1BYTE_DATA(text);
        ascii = 1;
        for (Py_ssize_t i = 0; i < L && ascii; i++) ascii = s[i] < 128;
    }
    if (ascii) {
        split_ascii(PyUnicode_1BYTE_DATA(text), L, max_words, ws);
        return 0;
    }
    /* not ASCII: code point by code point with Python's whitespace test and its simple
     * lower-case mapping, which is what str.lower() does except for U+0130 (two
     * characters in lower case) and U+03A3 (final sigma, by context): a text with one in
     * the words taken (where it could change them) takes Python's own methods below */
    const void *data = PyUnicode_DATA(text);
    int rc;
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        rc = split_kind(PyUnicode_1BYTE_KIND, data, L, max_words, ws);
        break;
    case PyUnicode_2BYTE_KIND:
        rc = split_kind(PyUnicode_2BYTE_KIND, data, L, max_words, ws);
        break;
    default:
        rc = split_kind(PyUnicode_4BYTE_KIND, data, L, max_words, ws);
    }
    if (rc < 2) return rc;
    ws->n = 0;
    PyObject *sub = PyUnicode_Substring(text, 0, L);
    if (sub == NULL) return -1;
    PyObject *low = PyObject_CallMethod(sub, "lower", NULL);
    Py_DECREF(sub);
    if (low == NULL) return -1;
    PyObject *list = PyUnicode_Split(low, NULL, -1);
    Py_DECREF(low);
    if (list == NULL) return -1;
    rc = 0;
    Py_ssize_t nw = PyList_GET_SIZE(list);
    for (Py_ssize_t i = 0; i < nw && i < max_words && rc == 0; i++) {
        PyObject *w = PyList_GET_ITEM(list, i);
        if (PyUnicode_GET_LENGTH(w) > MAX_WORD_CHARS) {
            PyObject *cut = PyUnicode_Substring(w, 0, MAX_WORD_CHARS);
            if (cut == NULL) {
                rc = -1;
                break;
            }
            rc = push_word(ws, cut);
            Py_DECREF(cut);
        } else {
            rc = push_word(ws, w);
        }
    }
    Py_DECREF(list);
    return rc;
}

/* --- one prompt ------------------------------------------------------------------------ */
enum { ROUTE_LOGITS = 0, ROUTE_PYTHON = 1, ROUTE_GATED = 2, ROUTE_EMPTY = 3 };

/* the MLP on a mean embedding ``acc`` -> out (k floats). The hidden layer 16 units at a
 * time, kept in registers across the whole input (the compiler's vectors: 4 SSE or 2 AVX),
 * over the padded copy of w1 (each unit's sum in input order, whatever the width); then
 * each logit from 8 partial sums over the units, against w2 transposed */
HOT static void mlp(const Model *m, const float *acc, float *out) {
    float hid[4096] __attribute__((aligned(32)));
    Py_ssize_t hp = m->hp;
    Py_ssize_t j = 0;
    for (; j + 32 <= hp; j += 32) { /* 32 units: four independent sums in flight with AVX */
        float a[32] __attribute__((aligned(32)));
        memcpy(a, m->b1p + j, sizeof(a));
        const float *wr = m->w1p + j;
        for (Py_ssize_t d = 0; d < m->in_c; d++, wr += hp) {
            float x = acc[d];
            for (int t = 0; t < 32; t++) a[t] += x * wr[t];
        }
        memcpy(hid + j, a, sizeof(a));
    }
    for (; j < hp; j += 16) {
        float a[16] __attribute__((aligned(32)));
        memcpy(a, m->b1p + j, sizeof(a));
        const float *wr = m->w1p + j;
        for (Py_ssize_t d = 0; d < m->in_c; d++, wr += hp) {
            float x = acc[d];
            for (int t = 0; t < 16; t++) a[t] += x * wr[t];
        }
        memcpy(hid + j, a, sizeof(a));
    }
    for (Py_ssize_t j = 0; j < hp; j++) hid[j] = hid[j] < 0 ? 0.0f : hid[j]; /* ReLU (NaN kept) */
    for (Py_ssize_t c = 0; c < m->k; c++) { /* each logit: 8 partial sums over the units */
        float part[8] = {0};
        const float *wr = m->w2t + c * hp;
        for (Py_ssize_t j = 0; j < hp; j += 8)
            for (int t = 0; t < 8; t++) part[t] += hid[j + t] * wr[j + t];
        out[c] = m->b2[c] + (((part[0] + part[1]) + (part[2] + part[3])) +
                             ((part[4] + part[5]) + (part[6] + part[7])));
    }
}

/* a prompt's integer sums: the hashed rows', the lexicon rows' (lacci, or ``live`` for
 * the live columns kept in cache entries), the feature and lexicon row counts */
typedef struct {
    int32_t *acci, *lacci;
    int32_t live[LEX_INLINE];
    Py_ssize_t count, nlex;
} Sums;

/* add a cached word's sums */
static inline __attribute__((always_inline)) void add_entry(const Model *m, const Slot *e,
                                                            Sums *sm) {
    size_t dim = (size_t)m->dim;
    sm->count += e->count;
    const int16_t *row = slot_sums(e);
    if (dim == 32) /* the shipped width: a loop of fixed length, unrolled */
        for (int d = 0; d < 32; d++) sm->acci[d] += row[d];
    else
        for (size_t d = 0; d < dim; d++) sm->acci[d] += row[d];
    if (e->lex >= 0 && m->nlive <= LEX_INLINE) { /* its lexicon row's live columns */
        for (int j = 0; j < LEX_INLINE; j++) sm->live[j] += e->lexv[j];
        sm->nlex++;
    } else if (e->lex >= 0) { /* its lexicon row, copied into the entry */
        const int8_t *lrow = (const int8_t *)(row + dim);
        for (size_t d = 0; d < dim; d++) sm->lacci[d] += lrow[d];
        sm->nlex++;
    }
}

/* the gate's rules hit (*mask) and, unless the gate decides alone, the logits: ROUTE_* */
HOT static int route_words(Held *hd, const Gate *g, Words *ws, uint64_t *mask, float *out) {
    const Model *m = &hd->m;
    Cache *cache = &hd->cache;
    Py_ssize_t nw = ws->n;
    *mask = 0;
    for (Py_ssize_t i = 0; i < nw; i++) {
        ws->key[i] = quick_hash(ws->buf + ws->off[i], ws->len[i]);
        cache_prefetch(cache, ws->key[i]);
    }
    float acc[2048], lacc[1024];
    int32_t acci[1024], lacci[1024];
    Sums sm = {acci, lacci, {0}, 0, 0};
    size_t dim = (size_t)m->dim;
    memset(acc, 0, sizeof(float) * dim);
    memset(acci, 0, sizeof(int32_t) * dim);
    if (m->nlex > 0) {
        memset(lacc, 0, sizeof(float) * dim);
        memset(lacci, 0, sizeof(int32_t) * dim);
    }
    /* the words the cache holds: their sums, and the gate's rule (kept in the entry, so a
     * word is put to the gate once while the cache holds it); the others after the gate
     * (integer sums: the order they are added in changes nothing) */
    Py_ssize_t miss[MAX_WORDS], nmiss = 0;
    int8_t rule[MAX_WORDS];
    int gated = g != NULL && g->cap, python = 0;
    uint16_t epoch = gated ? gate_epoch_of(cache, g) : 0;
    for (Py_ssize_t i = 0; i < nw; i++) {
        const unsigned char *w = ws->buf + ws->off[i];
        Slot *e = (Slot *)cache_find(cache, w, ws->len[i], ws->key[i]);
        if (e != NULL) {
            ws->h[i] = e->h;
            add_entry(m, e, &sm);
        } else {
            miss[nmiss++] = i;
        }
        if (!gated) continue;
        int r;
        if (e != NULL && e->gate_epoch == epoch) {
            r = e->gate_r;
        } else {
            r = gate_code(g, w, ws->len[i], ws->key[i]);
            if (e != NULL) {
                e->gate_epoch = epoch;
                e->gate_r = (int8_t)r;
            }
        }
        rule[i] = (int8_t)r;
        if (r == GATE_PYTHON) python = 1;
        else if (r >= 0) *mask |= (uint64_t)1 << r;
    }
    if (python) return ROUTE_PYTHON;
    if (*mask && !(g->regex & (*mask & (~*mask + 1)))) return ROUTE_GATED;
    if (nw == 0) return ROUTE_EMPTY;
    for (Py_ssize_t k = 0; k < nmiss; k++) { /* in order (a float table's sums: all here) */
        Py_ssize_t i = miss[k];
        const unsigned char *w = ws->buf + ws->off[i];
        Slot *e = (Slot *)cache_find(cache, w, ws->len[i], ws->key[i]); /* (taken just now) */
        if (e == NULL) {
            e = (Slot *)cache_get(m, cache, w, ws->len[i], ws->key[i]);
            if (e != NULL && gated) {
                e->gate_epoch = epoch;
                e->gate_r = rule[i];
            }
        }
        if (e != NULL) {
            ws->h[i] = e->h;
            add_entry(m, e, &sm);
            continue;
        }
        ws->h[i] = crc_more(CRC_W, w, ws->len[i]);
        sm.count += add_word(m, w, ws->len[i], ws->h[i], acc, acci);
        Py_ssize_t lr = m->nlex > 0 ? lex_row(m, w, ws->len[i], ws->h[i]) : -1;
        if (lr >= 0) { /* the lexicon's row: its own sum */
            add_row_at(m, lr, lacc, lacci);
            sm.nlex++;
        }
    }
    for (Py_ssize_t j = 0; j < m->nlive && j < LEX_INLINE; j++) lacci[m->live[j]] += sm.live[j];
    uint32_t bigram[MAX_WORDS]; /* then the bigrams: their rows asked for at once */
    for (Py_ssize_t i = 1; i < nw; i++) {
        uint32_t b = (uint32_t)(((uint64_t)ws->h[i - 1] * 0x9E3779B1u) & 0xFFFFFFFFu) ^ ws->h[i];
        bigram[i] = bucket_of(m, b);
        if (m->q != NULL) __builtin_prefetch(m->q + (size_t)bigram[i] * dim);
    }
    for (Py_ssize_t i = 1; i < nw; i++) add_row_at(m, bigram[i], acc, acci);
    sm.count += nw - 1;
    float inv = 1.0f / (float)sm.count;
    if (m->q != NULL)
        for (size_t d = 0; d < dim; d++) acc[d] = (float)acci[d] * m->scale[d] * inv;
    else
        for (size_t d = 0; d < dim; d++) acc[d] *= inv;
    if (m->nlex > 0) { /* the lexicon rows' mean after the hashed rows' (zeros: none), of
                        * the live columns only */
        float linv = sm.nlex > 0 ? 1.0f / (float)sm.nlex : 0.0f;
        for (Py_ssize_t j = 0; j < m->nlive; j++) {
            Py_ssize_t d = m->live[j];
            acc[dim + j] = m->q != NULL ? (float)lacci[d] * m->scale[d] * linv : lacc[d] * linv;
        }
    }
    mlp(m, acc, out);
    return ROUTE_LOGITS;
}

/* logits -> probabilities in place (double precision), entropy returned */
static double softmax(double *z, Py_ssize_t k) {
    double top = z[0], total = 0.0, ent = 0.0;
    for (Py_ssize_t c = 1; c < k; c++)
        if (z[c] > top) top = z[c];
    for (Py_ssize_t c = 0; c < k; c++) {
        z[c] = exp(z[c] - top);
        total += z[c];
    }
    for (Py_ssize_t c = 0; c < k; c++) {
        z[c] /= total;
        if (z[c] > 0) ent -= z[c] * log(z[c]);
    }
    return ent;
}

static int get_array(PyObject *o, Py_buffer *b, int ndim, const char *name, int int8_ok) {
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0) return -1;
    int f32 = b->itemsize == 4 && b->format != NULL && strcmp(b->format, "f") == 0;
    int i8 = int8_ok && b->itemsize == 1 && b->format != NULL && strcmp(b->format, "b") == 0;
    if (b->ndim != ndim || !(f32 || i8)) {
        PyErr_Format(PyExc_TypeError, "%s: expected a C-contiguous float32%s array of %d dims",
                     name, int8_ok ? " or int8" : "", ndim);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

static void release(Bufs *bf) {
    Py_buffer *all[6] = {&bf->t, &bf->s, &bf->w1, &bf->b1, &bf->w2, &bf->b2};
    for (int i = 0; i < bf->n; i++) PyBuffer_Release(all[i]);
    if (bf->has_lk) PyBuffer_Release(&bf->lk);
    bf->n = bf->has_lk = 0;
}

/* the lexicon's keys: a C-contiguous uint32 array of one dim, ascending */
static int lex_from(PyObject *o, Model *m, Bufs *bf) {
    m->lex = NULL;
    m->nlex = 0;
    if (o == Py_None) return 0;
    if (PyObject_GetBuffer(o, &bf->lk, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_ND) < 0)
        return -1;
    bf->has_lk = 1;
    const char *f = bf->lk.format;
    if (bf->lk.ndim != 1 || bf->lk.itemsize != 4 || f == NULL || (strcmp(f, "I") && strcmp(f, "=I"))) {
        PyErr_SetString(PyExc_TypeError, "lex_keys: expected a C-contiguous uint32 array of 1 dim");
        return -1;
    }
    m->lex = bf->lk.buf;
    m->nlex = bf->lk.shape[0];
    for (Py_ssize_t i = 1; i < m->nlex; i++)
        if (m->lex[i] <= m->lex[i - 1]) {
            PyErr_SetString(PyExc_ValueError, "lex_keys: not ascending");
            return -1;
        }
    return 0;
}

/* table (float32, or int8 with per-column scale), scale, w1, b1, w2, b2 */
static int model_from(PyObject *const *a, Model *m, Bufs *bf) {
    const char *names[6] = {"table", "scale", "w1", "b1", "w2", "b2"};
    Py_buffer *all[6] = {&bf->t, &bf->s, &bf->w1, &bf->b1, &bf->w2, &bf->b2};
    int dims[6] = {2, 1, 2, 1, 2, 1};
    bf->n = 0;
    for (int i = 0; i < 6; i++) {
        if (get_array(a[i], all[i], dims[i], names[i], i == 0) < 0) {
            release(bf);
            return -1;
        }
        bf->n++;
    }
    int quant = bf->t.itemsize == 1;
    m->table = quant ? NULL : bf->t.buf;
    m->q = quant ? bf->t.buf : NULL;
    m->scale = bf->s.buf;
    m->buckets = bf->t.shape[0];
    m->dim = bf->t.shape[1];
    m->w1 = bf->w1.buf;
    m->in = bf->w1.shape[0];
    m->hidden = bf->w1.shape[1];
    m->b1 = bf->b1.buf;
    m->w2 = bf->w2.buf;
    m->k = bf->w2.shape[1];
    m->b2 = bf->b2.buf;
    if ((m->in != m->dim && m->in != 2 * m->dim) || bf->b1.shape[0] != m->hidden ||
        bf->w2.shape[0] != m->hidden || bf->b2.shape[0] != m->k || m->dim > 1024 ||
        bf->s.shape[0] != m->dim ||
        m->hidden > 4096 || m->buckets < 1) {
        PyErr_SetString(PyExc_ValueError, "router arrays do not fit together");
        release(bf);
        return -1;
    }
    return 0;
}

/* the lexicon's live columns, and mlp's copies of w1 (the rows of the hashed inputs, then
 * of the live columns' inputs) and b1, hidden rounded up to 16, zeros after */
static int pad_hidden(Model *m) {
    m->nlive = 0;
    for (Py_ssize_t d = 0; d < m->dim && m->nlex > 0; d++) {
        int live = 0;
        for (Py_ssize_t r = m->buckets; r < m->buckets + m->nlex && !live; r++)
            live = m->q != NULL ? m->q[r * m->dim + d] != 0 : m->table[r * m->dim + d] != 0.0f;
        if (live) m->live[m->nlive++] = d;
    }
    m->in_c = m->dim + m->nlive;
    m->hp = (m->hidden + 15) / 16 * 16;
    size_t nw = (size_t)(m->in_c * m->hp) * sizeof(float), nb = (size_t)m->hp * sizeof(float);
    size_t n2 = (size_t)(m->k * m->hp) * sizeof(float);
    m->w1p = aligned_alloc(32, (nw + 31) & ~(size_t)31);
    m->b1p = aligned_alloc(32, (nb + 31) & ~(size_t)31);
    m->w2t = aligned_alloc(32, (n2 + 31) & ~(size_t)31);
    if (m->w1p == NULL || m->b1p == NULL || m->w2t == NULL) {
        free(m->w1p);
        free(m->b1p);
        free(m->w2t);
        m->w1p = m->b1p = m->w2t = NULL;
        return -1;
    }
    memset(m->w1p, 0, nw);
    memset(m->b1p, 0, nb);
    memset(m->w2t, 0, n2);
    for (Py_ssize_t j = 0; j < m->hidden; j++)
        for (Py_ssize_t c = 0; c < m->k; c++) m->w2t[c * m->hp + j] = m->w2[j * m->k + c];
    for (Py_ssize_t d = 0; d < m->in_c; d++) {
        Py_ssize_t row = d < m->dim ? d : m->dim + m->live[d - m->dim];
        memcpy(m->w1p + d * m->hp, m->w1 + row * m->hidden, (size_t)m->hidden * sizeof(float));
    }
    memcpy(m->b1p, m->b1, (size_t)m->hidden * sizeof(float));
    return 0;
}

static void held_free(PyObject *cap) {
    Held *h = PyCapsule_GetPointer(cap, "llmlib.router._routerc.model");
    if (h != NULL) {
        release(&h->bf);
        cache_free(&h->cache);
        free(h->m.w1p);
        free(h->m.b1p);
        free(h->m.w2t);
        PyMem_Free(h);
    }
}

static PyObject *make_model(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "make_model(table, scale, w1, b1, w2, b2[, lex_keys])");
        return NULL;
    }
    Held *h = PyMem_Calloc(1, sizeof(Held));
    if (h == NULL) return PyErr_NoMemory();
    if (model_from(args, &h->m, &h->bf) < 0) {
        PyMem_Free(h);
        return NULL;
    }
    if (lex_from(nargs == 7 ? args[6] : Py_None, &h->m, &h->bf) < 0 ||
        h->m.nlex >= h->m.buckets || h->m.in != (h->m.nlex > 0 ? 2 : 1) * h->m.dim) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "router arrays do not fit the lexicon's keys");
        release(&h->bf);
        PyMem_Free(h);
        return NULL;
    }
    h->m.buckets -= h->m.nlex; /* the lexicon's rows come after the hashed ones */
    h->m.bucket_m = UINT64_MAX / (uint64_t)h->m.buckets + 1;
    if (h->m.k > 256) {
        release(&h->bf);
        PyMem_Free(h);
        PyErr_SetString(PyExc_ValueError, "at most 256 experts");
        return NULL;
    }
    if (pad_hidden(&h->m) < 0) {
        release(&h->bf);
        PyMem_Free(h);
        return PyErr_NoMemory();
    }
    PyObject *cap = PyCapsule_New(h, "llmlib.router._routerc.model", held_free);
    if (cap == NULL) {
        free(h->m.w1p);
        free(h->m.b1p);
        free(h->m.w2t);
        release(&h->bf);
        PyMem_Free(h);
    }
    return cap;
}

static Held *model_of(PyObject *cap) {
    return PyCapsule_GetPointer(cap, "llmlib.router._routerc.model");
}

/* (probabilities tuple, entropy) of logits ``out`` */
static PyObject *probs_tuple(const Model *m, const float *out) {
    double z[256];
    for (Py_ssize_t c = 0; c < m->k; c++) z[c] = out[c];
    double ent = softmax(z, m->k);
    PyObject *probs = PyTuple_New(m->k);
    if (probs == NULL) return NULL;
    for (Py_ssize_t c = 0; c < m->k; c++) {
        PyObject *f = PyFloat_FromDouble(z[c]);
        if (f == NULL) {
            Py_DECREF(probs);
            return NULL;
        }
        PyTuple_SET_ITEM(probs, c, f);
    }
    return Py_BuildValue("(Nd)", probs, ent);
}

static PyObject *embed_probs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "embed_probs(words: list, model)");
        return NULL;
    }
    Held *hd = model_of(args[1]);
    if (hd == NULL) return NULL;
    Words ws;
    int rc = words_from_list(args[0], &ws);
    if (rc < 0) return NULL;
    float out[256];
    uint64_t mask;
    if (rc != 0 || route_words(hd, NULL, &ws, &mask, out) != ROUTE_LOGITS) Py_RETURN_NONE;
    return probs_tuple(&hd->m, out);
}

/* --- the gate as a capsule ------------------------------------------------------------- */
static void gate_free(PyObject *cap) {
    Gate *g = PyCapsule_GetPointer(cap, "llmlib.router._routerc.gate");
    if (g != NULL) {
        PyMem_Free(g->e);
        PyMem_Free(g->arena);
        PyMem_Free(g);
    }
}

static PyObject *make_gate(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyDict_Check(args[0]) || !PyLong_Check(args[1]) || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "make_gate(keywords: dict[str, int], regex_rules: int, experts: list)");
        return NULL;
    }
    Gate *g = PyMem_Calloc(1, sizeof(Gate));
    if (g == NULL) return PyErr_NoMemory();
    PyObject *cap = PyCapsule_New(g, "llmlib.router._routerc.gate", gate_free);
    if (cap == NULL) {
        PyMem_Free(g);
        return NULL;
    }
    g->serial = ++gates_made;
    g->regex = PyLong_AsUnsignedLongLongMask(args[1]);
    Py_ssize_t nr = PyList_GET_SIZE(args[2]);
    g->rules = (int)nr;
    for (Py_ssize_t r = 0; r < nr && r < 64; r++) {
        long e = PyLong_AsLong(PyList_GET_ITEM(args[2], r));
        if (e < 0 || e > 254) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "expert index out of range");
            Py_DECREF(cap);
            return NULL;
        }
        g->expert[r] = (uint8_t)e;
    }
    Py_ssize_t nk = PyDict_GET_SIZE(args[0]), total = 0, pos = 0;
    size_t cap_n = 16;
    while (cap_n < 2 * (size_t)nk) cap_n <<= 1;
    g->e = PyMem_Malloc(cap_n * sizeof(GEntry));
    PyObject *key, *val;
    while (g->e != NULL && PyDict_Next(args[0], &pos, &key, &val)) {
        Py_ssize_t n;
        if (!PyUnicode_Check(key) || PyUnicode_AsUTF8AndSize(key, &n) == NULL) {
            PyErr_Clear();
            continue; /* a keyword no word can equal (not text, or a lone surrogate) */
        }
        total += n;
    }
    g->arena = PyMem_Malloc((size_t)total + 8);
    if (g->e == NULL || g->arena == NULL) {
        Py_DECREF(cap);
        return PyErr_NoMemory();
    }
    g->cap = cap_n;
    for (size_t i = 0; i < cap_n; i++) g->e[i].rule = -1;
    Py_ssize_t at = 0;
    pos = 0;
    while (PyDict_Next(args[0], &pos, &key, &val)) {
        Py_ssize_t n;
        const char *u = PyUnicode_Check(key) ? PyUnicode_AsUTF8AndSize(key, &n) : NULL;
        if (u == NULL) {
            PyErr_Clear();
            continue;
        }
        long rule = PyLong_AsLong(val);
        if (rule < 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "negative rule index");
            Py_DECREF(cap);
            return NULL;
        }
        memcpy(g->arena + at, u, (size_t)n);
        memset(g->arena + at + n, 0, 8);
        uint64_t h = quick_hash(g->arena + at, n);
        g->lens |= (uint64_t)1 << (n < 63 ? n : 63);
        if (n > 0) {
            unsigned char f = (unsigned char)u[0], l = (unsigned char)u[n - 1];
            g->first[f >> 6] |= (uint64_t)1 << (f & 63);
            g->last[l >> 6] |= (uint64_t)1 << (l & 63);
        }
        size_t i = h & (cap_n - 1);
        while (g->e[i].rule >= 0) i = (i + 1) & (cap_n - 1);
        g->e[i] = (GEntry){h, (int32_t)(rule > 0x7FFFFFFF ? 0x7FFFFFFF : rule), at, n};
        at += n;
    }
    return cap;
}

static const Gate *gate_of(PyObject *o) {
    if (o == Py_None) return NULL;
    return PyCapsule_GetPointer(o, "llmlib.router._routerc.gate");
}

static PyObject *route_text(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "route_text(text: str, model, gate, max_words: int)");
        return NULL;
    }
    Held *hd = model_of(args[1]);
    if (hd == NULL) return NULL;
    const Gate *g = gate_of(args[2]);
    if (g == NULL && PyErr_Occurred()) return NULL;
    Py_ssize_t max_words = PyLong_AsSsize_t(args[3]);
    if (max_words == -1 && PyErr_Occurred()) return NULL;
    Words ws;
    int rc = words_from_text(args[0], max_words, &ws);
    if (rc < 0) return NULL;
    if (rc > 0) Py_RETURN_NONE;
    float out[256];
    uint64_t mask;
    rc = route_words(hd, g, &ws, &mask, out);
    if (rc == ROUTE_PYTHON) Py_RETURN_NONE;
    if (rc != ROUTE_LOGITS) return Py_BuildValue("(KOd)", (unsigned long long)mask, Py_None, 0.0);
    PyObject *pe = probs_tuple(&hd->m, out);
    if (pe == NULL) return NULL;
    PyObject *res = Py_BuildValue("(KOO)", (unsigned long long)mask, PyTuple_GET_ITEM(pe, 0),
                                  PyTuple_GET_ITEM(pe, 1));
    Py_DECREF(pe);
    return res;
}

static PyObject *words(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "words(text: str, max_words: int)");
        return NULL;
    }
    Py_ssize_t max_words = PyLong_AsSsize_t(args[1]);
    if (max_words == -1 && PyErr_Occurred()) return NULL;
    Words ws;
    int rc = words_from_text(args[0], max_words, &ws);
    if (rc < 0) return NULL;
    if (rc > 0) Py_RETURN_NONE;
    PyObject *out = PyList_New(ws.n);
    for (Py_ssize_t i = 0; out != NULL && i < ws.n; i++) {
        PyObject *w = PyUnicode_DecodeUTF8((const char *)ws.buf + ws.off[i], ws.len[i], NULL);
        if (w == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, w);
    }
    return out;
}

/* route_many's sources, per prompt (as llmlib.router.SOURCES) */
enum { SRC_MLP = 0, SRC_DEFAULT = 1, SRC_GATE = 2, SRC_EMPTY = 3 };

static PyObject *route_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "route_many(texts: list, model, gate, threshold: "
                                         "float, default: int, max_words: int, probs)");
        return NULL;
    }
    Held *hd = model_of(args[1]);
    if (hd == NULL) return NULL;
    const Gate *g = gate_of(args[2]);
    if (g == NULL && PyErr_Occurred()) return NULL;
    double threshold = PyFloat_AsDouble(args[3]);
    long dflt = PyLong_AsLong(args[4]);
    Py_ssize_t max_words = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) return NULL;
    const Model *m = &hd->m;
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    Py_buffer pb = {0};
    float *probs = NULL;
    if (args[6] != Py_None) { /* n x k float32, written where the MLP decided */
        if (PyObject_GetBuffer(args[6], &pb, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
            return NULL;
        if (pb.itemsize != 4 || pb.format == NULL || strcmp(pb.format, "f") != 0 ||
            pb.len != (Py_ssize_t)sizeof(float) * n * m->k) {
            PyBuffer_Release(&pb);
            PyErr_SetString(PyExc_ValueError, "probs: a writable float32 buffer of n x k");
            return NULL;
        }
        probs = pb.buf;
    }
    PyObject *res = PyBytes_FromStringAndSize(NULL, n);
    PyObject *srcs = PyBytes_FromStringAndSize(NULL, n);
    if (res == NULL || srcs == NULL) {
        Py_XDECREF(res);
        Py_XDECREF(srcs);
        if (probs) PyBuffer_Release(&pb);
        return NULL;
    }
    unsigned char *choice = (unsigned char *)PyBytes_AS_STRING(res);
    unsigned char *source = (unsigned char *)PyBytes_AS_STRING(srcs);
    Words ws;
    float out[256];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(args[0], i);
        choice[i] = source[i] = PYTHON_MUST;
        if (!PyUnicode_Check(t)) continue;
        int rc = words_from_text(t, max_words, &ws);
        if (rc < 0) {
            Py_DECREF(res);
            Py_DECREF(srcs);
            if (probs) PyBuffer_Release(&pb);
            return NULL;
        }
        if (rc > 0) continue;
        uint64_t mask;
        rc = route_words(hd, g, &ws, &mask, out);
        if (rc == ROUTE_GATED) {
            choice[i] = g->expert[__builtin_ctzll(mask)];
            source[i] = SRC_GATE;
        } else if (rc == ROUTE_EMPTY) {
            choice[i] = (unsigned char)dflt;
            source[i] = SRC_EMPTY;
        } else if (rc == ROUTE_LOGITS && !mask) { /* (a regex rule hit: Python decides) */
            Py_ssize_t best = 0;
            for (Py_ssize_t c = 1; c < m->k; c++)
                if (out[c] > out[best]) best = c;
            double z[256], total = 0.0;
            for (Py_ssize_t c = 0; c < m->k; c++) total += (z[c] = exp((double)out[c] - out[best]));
            int low = 1.0 / total < threshold;
            choice[i] = (unsigned char)(low ? dflt : best);
            source[i] = low ? SRC_DEFAULT : SRC_MLP;
            if (probs)
                for (Py_ssize_t c = 0; c < m->k; c++) probs[i * m->k + c] = (float)(z[c] / total);
        }
    }
    if (probs) PyBuffer_Release(&pb);
    return Py_BuildValue("(NN)", res, srcs);
}

/* the gate's word test: keywords (a set) that equal a word, or a word with the gate's
 * punctuation stripped from both ends */
static int gate_punct(Py_UCS4 c) {
    switch (c) {
    case '(': case ')': case '[': case ']': case '{': case '}': case '<': case '>':
    case '"': case '\'': case '.': case ',': case ';': case ':': case '!': case '?':
    case 0x201C: case 0x201D: case 0x2018: case 0x2019:
        return 1;
    default:
        return 0;
    }
}

static PyObject *gate_hits(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0]) || !PyAnySet_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "gate_hits(words: list, keywords: set)");
        return NULL;
    }
    PyObject *words = args[0], *kw = args[1], *hits = NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(words); i++) {
        PyObject *w = PyList_GET_ITEM(words, i), *hit = NULL, *cut = NULL;
        if (!PyUnicode_Check(w)) continue;
        int in = PySet_Contains(kw, w);
        if (in < 0) goto fail;
        if (in) {
            hit = w;
        } else {
            Py_ssize_t lo = 0, hi = PyUnicode_GET_LENGTH(w);
            while (lo < hi && gate_punct(PyUnicode_READ_CHAR(w, lo))) lo++;
            while (hi > lo && gate_punct(PyUnicode_READ_CHAR(w, hi - 1))) hi--;
            if (lo == 0 && hi == PyUnicode_GET_LENGTH(w)) continue;
            if (lo == hi) continue;
            cut = PyUnicode_Substring(w, lo, hi);
            if (cut == NULL) goto fail;
            in = PySet_Contains(kw, cut);
            if (in < 0) {
                Py_DECREF(cut);
                goto fail;
            }
            if (in) hit = cut;
        }
        if (hit != NULL) {
            if (hits == NULL && (hits = PyList_New(0)) == NULL) {
                Py_XDECREF(cut);
                goto fail;
            }
            if (PyList_Append(hits, hit) < 0) {
                Py_XDECREF(cut);
                goto fail;
            }
        }
        Py_XDECREF(cut);
    }
    if (hits == NULL) Py_RETURN_NONE;
    return hits;
fail:
    Py_XDECREF(hits);
    return NULL;
}

/* cache_slots(model, n): the model's word cache emptied, and made of n entries (a power of
 * two, 4 to 2^20) when next used; 0: the default size. For tests: a small cache is cleared
 * often, in the middle of prompts */
static PyObject *cache_slots(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cache_slots(model, n: int)");
        return NULL;
    }
    Held *hd = model_of(args[0]);
    if (hd == NULL) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n != 0 && (n < 4 || n > (1 << 20) || (n & (n - 1)) != 0)) {
        PyErr_SetString(PyExc_ValueError, "cache_slots: 0, or a power of two from 4 to 2^20");
        return NULL;
    }
    cache_free(&hd->cache);
    hd->cache.slots = (size_t)n;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"make_model", (PyCFunction)(void (*)(void))make_model, METH_FASTCALL,
     "A model (capsule) from table, scale, w1, b1, w2, b2; it holds their buffers."},
    {"make_gate", (PyCFunction)(void (*)(void))make_gate, METH_FASTCALL,
     "A gate (capsule) from {keyword: rule}, the regex rules' bit mask, each rule's expert."},
    {"route_text", (PyCFunction)(void (*)(void))route_text, METH_FASTCALL,
     "(rules hit, probabilities or None, entropy) of a prompt, or None when Python must."},
    {"route_many", (PyCFunction)(void (*)(void))route_many, METH_FASTCALL,
     "Expert index per prompt as bytes (255: Python must decide that prompt)."},
    {"words", (PyCFunction)(void (*)(void))words, METH_FASTCALL,
     "The words a prompt is routed on, as this module splits it (None: Python must)."},
    {"embed_probs", (PyCFunction)(void (*)(void))embed_probs, METH_FASTCALL,
     "(probabilities, entropy) of one prompt's words, or None when Python must compute."},
    {"gate_hits", (PyCFunction)(void (*)(void))gate_hits, METH_FASTCALL,
     "Keywords hit by words (exactly, or with punctuation stripped), or None."},
    {"cache_slots", (PyCFunction)(void (*)(void))cache_slots, METH_FASTCALL,
     "Empty a model's word cache and give it n entries (tests: 0 is the default size)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_routerc", NULL, -1, methods};

PyMODINIT_FUNC PyInit__routerc(void) {
    crc_init();
    for (const char *p = "()[]{}<>\"'.,;:!?"; *p; p++) PUNCT[(unsigned char)*p] = 1;
    for (int c = 0; c < 256; c++) {
        SPACE[c] = c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31);
        LOWER[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    CRC_W = crc_more(0, (const unsigned char *)"w:", 2);
    CRC_C = crc_more(0, (const unsigned char *)"c:", 2);
    CRC_S = crc_more(0, (const unsigned char *)"s:", 2);
    return PyModule_Create(&mod);
}
