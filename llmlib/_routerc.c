/* The router's hot path in C: features of a list of words, the mean of their embedding
 * rows, and the MLP, for one prompt or many. It computes exactly what llmlib/router.py
 * defines (FEATURE_VERSION 1): crc32("w:" + word), crc32("c:" + gram) for the character
 * 3- and 4-grams of "<" + word + ">" (characters are code points: UTF-8 sequences), and
 * the bigram mix ((crc(w1) * 0x9E3779B1) mod 2^32) ^ crc(w2), each modulo the bucket
 * count. Words come from Python (lower-cased, split, capped there); a word that is not
 * valid UTF-8 (a lone surrogate) makes the call return None so Python computes it.
 *
 * make_model(table, scale, w1, b1, w2, b2) -> a capsule holding the arrays' buffers
 * embed_probs(words, model) -> (probabilities, entropy) or None
 * embed_logits_many(list_of_word_lists, model) -> (n x k float32 logits as bytes, flags)
 * gate_hits(words, keyword_set) -> keywords hit, exactly or with punctuation stripped
 * Arrays, C-contiguous: table (buckets, dim) int8 (rows summed as integers, then times
 * scale (dim) once: a row is one 32-byte cache line) or float32 (scale ignored); float32
 * w1 (dim, hidden), b1 (hidden), w2 (hidden, k), b2 (k).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

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

static uint32_t CRC_W, CRC_C; /* crc32("w:"), crc32("c:") */

typedef struct {
    const float *table;    /* float32 rows, or NULL with q set */
    const int8_t *q;       /* int8 rows (summed as integers, scaled once at the end) */
    const float *scale;    /* per-column scales of q */
    Py_ssize_t buckets, dim;
    const float *w1, *b1, *w2, *b2;
    Py_ssize_t hidden, k;
} Model;

/* add row ``b`` of the table to the accumulator (int32 for an int8 table) */
static inline void add_row(const Model *m, uint32_t b, float *acc, int32_t *acci) {
    Py_ssize_t off = (Py_ssize_t)(b % (uint32_t)m->buckets) * m->dim;
    if (m->q != NULL) {
        const int8_t *row = m->q + off;
        for (Py_ssize_t d = 0; d < m->dim; d++) acci[d] += row[d];
    } else {
        const float *row = m->table + off;
        for (Py_ssize_t d = 0; d < m->dim; d++) acc[d] += row[d];
    }
}

/* sum of the feature rows of one word into acc/acci; returns the feature count (-1: too
 * long, Python must do it); *hash gets the word's crc for the bigram */
static Py_ssize_t add_word(const Model *m, const unsigned char *w, Py_ssize_t n, float *acc,
                           int32_t *acci, uint32_t *hash) {
    Py_ssize_t count = 0;
    uint32_t h = crc_more(CRC_W, w, n);
    *hash = h;
    add_row(m, h, acc, acci);
    count++;
    /* "<" + word + ">" and the byte offset where each code point starts */
    unsigned char buf[4 * 64 + 2];
    Py_ssize_t starts[64 + 3];
    if (n > 4 * 64) return -1; /* words are cut to 32 code points before this */
    buf[0] = '<';
    memcpy(buf + 1, w, (size_t)n);
    buf[n + 1] = '>';
    Py_ssize_t len = n + 2, cps = 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if ((buf[i] & 0xC0) != 0x80) starts[cps++] = i;
    starts[cps] = len;
    for (int g = 3; g <= 4; g++) {
        for (Py_ssize_t i = 0; i + g <= cps; i++) {
            uint32_t c = crc_more(CRC_C, buf + starts[i], starts[i + g] - starts[i]);
            add_row(m, c, acc, acci);
            count++;
        }
    }
    return count;
}

/* logits of one word list into out (k floats); 0 on success, 1 if Python must do it,
 * -1 on a Python error */
static int one(const Model *m, PyObject *words, float *acc, float *hid, float *out) {
    Py_ssize_t nw = PyList_GET_SIZE(words), count = 0;
    int32_t acci[1024];
    memset(acc, 0, sizeof(float) * (size_t)m->dim);
    memset(acci, 0, sizeof(int32_t) * (size_t)m->dim);
    uint32_t prev = 0, h = 0;
    for (Py_ssize_t i = 0; i < nw; i++) {
        PyObject *s = PyList_GET_ITEM(words, i);
        if (!PyUnicode_Check(s)) {
            PyErr_SetString(PyExc_TypeError, "words must be str");
            return -1;
        }
        Py_ssize_t n;
        const char *u = PyUnicode_AsUTF8AndSize(s, &n);
        if (u == NULL) { /* a lone surrogate: leave it to Python */
            PyErr_Clear();
            return 1;
        }
        Py_ssize_t c = add_word(m, (const unsigned char *)u, n, acc, acci, &h);
        if (c < 0) return 1;
        count += c;
        if (i > 0) {
            add_row(m, (uint32_t)(((uint64_t)prev * 0x9E3779B1u) & 0xFFFFFFFFu) ^ h, acc, acci);
            count++;
        }
        prev = h;
    }
    if (count == 0) return 1; /* no words: Python decides (the default expert) */
    float inv = 1.0f / (float)count;
    if (m->q != NULL)
        for (Py_ssize_t d = 0; d < m->dim; d++) acc[d] = (float)acci[d] * m->scale[d] * inv;
    else
        for (Py_ssize_t d = 0; d < m->dim; d++) acc[d] *= inv;
    for (Py_ssize_t j = 0; j < m->hidden; j++) hid[j] = m->b1[j];
    for (Py_ssize_t d = 0; d < m->dim; d++) {
        const float *wr = m->w1 + d * m->hidden;
        float x = acc[d];
        for (Py_ssize_t j = 0; j < m->hidden; j++) hid[j] += x * wr[j];
    }
    for (Py_ssize_t j = 0; j < m->hidden; j++)
        if (hid[j] < 0) hid[j] = 0;
    for (Py_ssize_t c = 0; c < m->k; c++) out[c] = m->b2[c];
    for (Py_ssize_t j = 0; j < m->hidden; j++) {
        const float *wr = m->w2 + j * m->k;
        float x = hid[j];
        for (Py_ssize_t c = 0; c < m->k; c++) out[c] += x * wr[c];
    }
    return 0;
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

typedef struct {
    Py_buffer t, s, w1, b1, w2, b2;
    int n;
} Bufs;

static void release(Bufs *bf) {
    Py_buffer *all[6] = {&bf->t, &bf->s, &bf->w1, &bf->b1, &bf->w2, &bf->b2};
    for (int i = 0; i < bf->n; i++) PyBuffer_Release(all[i]);
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
    m->hidden = bf->w1.shape[1];
    m->b1 = bf->b1.buf;
    m->w2 = bf->w2.buf;
    m->k = bf->w2.shape[1];
    m->b2 = bf->b2.buf;
    if (bf->w1.shape[0] != m->dim || bf->b1.shape[0] != m->hidden ||
        bf->w2.shape[0] != m->hidden || bf->b2.shape[0] != m->k || m->dim > 1024 ||
        bf->s.shape[0] != m->dim ||
        m->hidden > 4096 || m->buckets < 1) {
        PyErr_SetString(PyExc_ValueError, "router arrays do not fit together");
        release(bf);
        return -1;
    }
    return 0;
}

/* a model: its arrays' buffers held (and released) by a capsule, made once per router */
typedef struct {
    Model m;
    Bufs bf;
} Held;

static void held_free(PyObject *cap) {
    Held *h = PyCapsule_GetPointer(cap, "llmlib._routerc.model");
    if (h != NULL) {
        release(&h->bf);
        PyMem_Free(h);
    }
}

static PyObject *make_model(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "make_model(table, scale, w1, b1, w2, b2)");
        return NULL;
    }
    Held *h = PyMem_Malloc(sizeof(Held));
    if (h == NULL) return PyErr_NoMemory();
    if (model_from(args, &h->m, &h->bf) < 0) {
        PyMem_Free(h);
        return NULL;
    }
    if (h->m.k > 256) {
        release(&h->bf);
        PyMem_Free(h);
        PyErr_SetString(PyExc_ValueError, "at most 256 experts");
        return NULL;
    }
    PyObject *cap = PyCapsule_New(h, "llmlib._routerc.model", held_free);
    if (cap == NULL) {
        release(&h->bf);
        PyMem_Free(h);
    }
    return cap;
}

static const Model *model_of(PyObject *cap) {
    Held *h = PyCapsule_GetPointer(cap, "llmlib._routerc.model");
    return h == NULL ? NULL : &h->m;
}

static PyObject *embed_probs(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "embed_probs(words: list, model)");
        return NULL;
    }
    const Model *m = model_of(args[1]);
    if (m == NULL) return NULL;
    float acc[1024], hid[4096], out[256];
    int rc = one(m, args[0], acc, hid, out);
    if (rc != 0) {
        if (rc < 0) return NULL;
        Py_RETURN_NONE;
    }
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

static PyObject *embed_logits_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "embed_logits_many(word_lists: list, model)");
        return NULL;
    }
    const Model *m = model_of(args[1]);
    if (m == NULL) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(args[0]);
    PyObject *res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(sizeof(float) * m->k * n));
    PyObject *flags = PyList_New(n); /* per prompt: None done here, True: Python must */
    if (res == NULL || flags == NULL) {
        Py_XDECREF(res);
        Py_XDECREF(flags);
        return NULL;
    }
    float acc[1024], hid[4096];
    float *out = (float *)PyBytes_AS_STRING(res);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *words = PyList_GET_ITEM(args[0], i);
        int rc = PyList_Check(words) ? one(m, words, acc, hid, out + i * m->k) : -2;
        if (rc == -2) {
            PyErr_SetString(PyExc_TypeError, "each item must be a list of words");
            rc = -1;
        }
        if (rc < 0) {
            Py_DECREF(res);
            Py_DECREF(flags);
            return NULL;
        }
        PyObject *f = rc ? Py_True : Py_None;
        Py_INCREF(f);
        PyList_SET_ITEM(flags, i, f);
    }
    return Py_BuildValue("(NN)", res, flags);
}

static PyMethodDef methods[] = {
    {"make_model", (PyCFunction)(void (*)(void))make_model, METH_FASTCALL,
     "A model (capsule) from table, scale, w1, b1, w2, b2; it holds their buffers."},
    {"embed_probs", (PyCFunction)(void (*)(void))embed_probs, METH_FASTCALL,
     "(probabilities, entropy) of one prompt's words, or None when Python must compute."},
    {"gate_hits", (PyCFunction)(void (*)(void))gate_hits, METH_FASTCALL,
     "Keywords hit by words (exactly, or with punctuation stripped), or None."},
    {"embed_logits_many", (PyCFunction)(void (*)(void))embed_logits_many, METH_FASTCALL,
     "(logits bytes, per-prompt flags: True where Python must compute) for word lists."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_routerc", NULL, -1, methods};

PyMODINIT_FUNC PyInit__routerc(void) {
    crc_init();
    CRC_W = crc_more(0, (const unsigned char *)"w:", 2);
    CRC_C = crc_more(0, (const unsigned char *)"c:", 2);
    return PyModule_Create(&mod);
}
