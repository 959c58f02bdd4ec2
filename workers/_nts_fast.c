/*
 * The NTS server's per-request work for one received batch, in C (module
 * ntpd_py.workers._nts_fast). Why C: in Python one NTS request cost 30-50 us
 * (parsing and building extension fields, four AES-SIV operations through
 * `cryptography`, one sendmsg per reply); chronyd answers in a few. This module
 * does what core/nts_server.py does for a request -- parse, open the cookie, verify
 * the authenticator, build the reply with fresh cookies or the NTS NAK -- for a whole
 * batch in one call, and lays the replies out for one sendmmsg. core/nts_server.py
 * stays the reference: tests/workers/test_nts_fast.py checks that both give the same
 * verdict and the same reply bytes (same nonces, same transmit time) for valid,
 * tampered and random requests, and tests/fuzz runs random bytes through it.
 *
 * AES-SIV-CMAC-256 is OpenSSL's (EVP "AES-128-SIV", the same library `cryptography`
 * uses), the nonce passed as the last associated-data component as everywhere else
 * in the project. The module reads no clock unless asked to (tx_ntp == 0: the
 * transmit time of each reply is read just before it is sealed, as the Python path
 * does) and draws no randomness: the nonces come in the `random` buffer.
 *
 * It runs in the unprivileged, seccomp-filtered server worker and parses bytes from
 * the network: every length is checked against the buffer it indexes, nothing is
 * allocated per request, and a request it does not fully understand is handed
 * back to Python (verdict PY) rather than guessed at.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define HEADER 48
#define MIN_EF 16
#define MAX_PACKET (48 + 1024 + 68) /* core/packet.py MAX_PACKET_BYTES: NTPv3-style MACs too */
#define UID_MIN 32
#define NONCE 16
#define TAG 16
#define KEY 32
#define COOKIE_HEAD (4 + NONCE)
#define COOKIE_PLAIN (2 * KEY)
#define COOKIE_BYTES (COOKIE_HEAD + TAG + COOKIE_PLAIN) /* 100 */
#define MAX_KEYS 1025
#define AEAD_SIV_CMAC_256 15

#define EF_UID 0x0104
#define EF_COOKIE 0x0204
#define EF_PLACEHOLDER 0x0304
#define EF_AUTH 0x0404
#define NTSN 0x4E54534Eu
#define NTP_UNIX_OFFSET 2208988800ull

/* Verdicts, one byte per slot (workers/_mmsg.py reads them). */
enum { V_SKIP = 0, V_PY = 1, V_AUTH = 2, V_NAK = 3, V_DROP = 4 };

static uint16_t be16(const unsigned char *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void put16(unsigned char *p, unsigned v) { p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v; }
static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static void put64(unsigned char *p, uint64_t v) {
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* AES-SIV (RFC 5297) over OpenSSL's AES-128: CBC for S2V's CMAC, CTR for the cipher.
 *
 * Why not EVP's "AES-128-SIV": OpenSSL 3.0 (Debian 12's) fails the tag of an empty
 * plaintext, and every NTS client request authenticates an empty plaintext. No
 * packaged SIV library exists for Debian 12 (ntpsec bundles its own copy of one).
 * So the SIV construction is written here on OpenSSL's AES, and checked byte for
 * byte against `cryptography`'s AESSIV and RFC 5297's test vector
 * (tests/workers/test_nts_fast.py). Two associated-data components: the data,
 * then the nonce. */
typedef struct {
    EVP_CIPHER_CTX *cbc; /* K1, for CMAC; never re-initialised between messages */
    EVP_CIPHER_CTX *ecb; /* K2, for the counter-mode keystream */
    unsigned char k1sub[16], k2sub[16], d0[16];
    unsigned char chain[16]; /* the CBC context's IV: the last block it produced */
} Siv;

#define SCRATCH (MAX_PACKET + 32)
static const unsigned char ZERO16[16];

static void dbl(unsigned char b[16]) {
    unsigned carry = b[0] >> 7;
    for (int i = 0; i < 15; i++) b[i] = (unsigned char)((b[i] << 1) | (b[i + 1] >> 7));
    b[15] = (unsigned char)((b[15] << 1) ^ (carry ? 0x87 : 0));
}

static void xor16(unsigned char *a, const unsigned char *b) {
    for (int i = 0; i < 16; i++) a[i] ^= b[i];
}

/* CMAC of m (at most SCRATCH - 16 bytes) under K1: one CBC pass over a copy whose last
 * block carries the subkey. The context keeps chaining from the last block it produced
 * (s->chain); xoring that into the first block is the same as starting from a zero IV,
 * and saves re-initialising the context for every message (each EVP call costs about
 * as much as the AES work on a short message). */
static int cmac(Siv *s, const unsigned char *m, size_t len, unsigned char out[16]) {
    unsigned char buf[SCRATCH];
    size_t blocks = len ? (len + 15) / 16 : 1;
    int l;
    if (blocks * 16 > sizeof buf) return 0;
    if (len) memcpy(buf, m, len);
    if (len && len % 16 == 0) {
        xor16(buf + len - 16, s->k1sub);
    } else {
        size_t last = (blocks - 1) * 16, rest = len - last;
        buf[len] = 0x80;
        memset(buf + len + 1, 0, 15 - rest);
        xor16(buf + last, s->k2sub);
    }
    xor16(buf, s->chain);
    if (!EVP_EncryptUpdate(s->cbc, buf, &l, buf, (int)(blocks * 16))) return 0;
    memcpy(s->chain, buf + (blocks - 1) * 16, 16);
    memcpy(out, s->chain, 16);
    OPENSSL_cleanse(buf, blocks * 16);
    return 1;
}

static int siv_new(Siv *s) {
    s->cbc = EVP_CIPHER_CTX_new();
    s->ecb = EVP_CIPHER_CTX_new();
    if (!s->cbc || !s->ecb) return 0;
    if (!EVP_EncryptInit_ex(s->cbc, EVP_aes_128_cbc(), NULL, NULL, NULL)) return 0;
    if (!EVP_EncryptInit_ex(s->ecb, EVP_aes_128_ecb(), NULL, NULL, NULL)) return 0;
    return EVP_CIPHER_CTX_set_padding(s->cbc, 0) && EVP_CIPHER_CTX_set_padding(s->ecb, 0);
}

static void siv_free(Siv *s) {
    if (s->cbc) EVP_CIPHER_CTX_free(s->cbc);
    if (s->ecb) EVP_CIPHER_CTX_free(s->ecb);
    OPENSSL_cleanse(s->k1sub, 64);
    s->cbc = s->ecb = NULL;
}

static int siv_key(Siv *s, const unsigned char key[KEY]) {
    int l;
    if (!EVP_EncryptInit_ex(s->cbc, NULL, NULL, key, ZERO16)) return 0;
    if (!EVP_EncryptInit_ex(s->ecb, NULL, NULL, key + 16, NULL)) return 0;
    /* L = AES(K1, 0): the subkeys; the chain is then L */
    if (!EVP_EncryptUpdate(s->cbc, s->chain, &l, ZERO16, 16)) return 0;
    memcpy(s->k1sub, s->chain, 16); dbl(s->k1sub);
    memcpy(s->k2sub, s->k1sub, 16); dbl(s->k2sub);
    return cmac(s, ZERO16, 16, s->d0);
}

static int s2v(Siv *s, const unsigned char *ad, size_t adlen, const unsigned char *nonce,
               size_t noncelen, const unsigned char *p, size_t plen, unsigned char v[16]) {
    unsigned char d[16], m[16], t[SCRATCH];
    memcpy(d, s->d0, 16);
    if (!cmac(s, ad, adlen, m)) return 0;
    dbl(d); xor16(d, m);
    if (!cmac(s, nonce, noncelen, m)) return 0;
    dbl(d); xor16(d, m);
    if (plen >= 16) {
        if (plen > sizeof t - 16) return 0;
        memcpy(t, p, plen);
        xor16(t + plen - 16, d);
        return cmac(s, t, plen, v);
    }
    dbl(d);
    memset(t, 0, 16);
    memcpy(t, p, plen);
    t[plen] = 0x80;
    xor16(t, d);
    return cmac(s, t, 16, v);
}

/* Counter mode from V (bits 31 and 63 cleared, RFC 5297 2.6), the 128-bit counter
 * incremented big-endian: the counter blocks encrypted in one ECB call. */
static int ctr(Siv *s, const unsigned char v[16], const unsigned char *in, size_t len,
               unsigned char *out) {
    unsigned char ks[SCRATCH];
    size_t blocks = (len + 15) / 16;
    int l;
    if (!len) return 1;
    if (blocks * 16 > sizeof ks) return 0;
    memcpy(ks, v, 16);
    ks[8] &= 0x7f;
    ks[12] &= 0x7f;
    for (size_t b = 1; b < blocks; b++) {
        unsigned char *q = ks + b * 16;
        memcpy(q, q - 16, 16);
        for (int i = 15; i >= 0 && ++q[i] == 0; i--) {}
    }
    if (!EVP_EncryptUpdate(s->ecb, ks, &l, ks, (int)(blocks * 16))) return 0;
    for (size_t i = 0; i < len; i++) out[i] = in[i] ^ ks[i];
    OPENSSL_cleanse(ks, blocks * 16);
    return 1;
}

/* out = V || C (ptlen + 16 bytes) */
static int siv_seal(Siv *s, const unsigned char *ad, size_t adlen, const unsigned char *nonce,
                    size_t noncelen, const unsigned char *pt, size_t ptlen, unsigned char *out) {
    unsigned char v[16];
    if (!s2v(s, ad, adlen, nonce, noncelen, pt, ptlen, v)) return 0;
    if (!ctr(s, v, pt, ptlen, out + TAG)) return 0;
    memcpy(out, v, 16);
    return 1;
}

/* in = V || C; out = the plaintext (inlen - 16 bytes) if it verifies, else 0 */
static int siv_open(Siv *s, const unsigned char *ad, size_t adlen, const unsigned char *nonce,
                    size_t noncelen, const unsigned char *in, size_t inlen, unsigned char *out) {
    unsigned char v[16];
    if (inlen < TAG) return 0;
    if (!ctr(s, in, in + TAG, inlen - TAG, out)) return 0;
    if (!s2v(s, ad, adlen, nonce, noncelen, out, inlen - TAG, v)
        || CRYPTO_memcmp(v, in, 16) != 0) {
        OPENSSL_cleanse(out, inlen - TAG);
        return 0;
    }
    return 1;
}

typedef struct {
    uint32_t id;
    Siv siv; /* keyed with this cookie key */
} CookieKey;

typedef struct {
    PyObject_HEAD
    CookieKey *keys;
    int nkeys;      /* keys[nkeys - 1] is the primary */
    Siv c2s, s2c;   /* rekeyed per request from its cookie */
    int ready;
} Engine;

static void free_keys(CookieKey *keys, int n) {
    if (!keys) return;
    for (int i = 0; i < n; i++) siv_free(&keys[i].siv);
    PyMem_Free(keys);
}

/* What parse_client_request (core/nts_extensions.py) finds in a request. */
typedef struct {
    const unsigned char *uid; size_t uidlen;
    const unsigned char *cookie; size_t cookielen;
    int placeholders;
    const unsigned char *nonce; size_t noncelen;
    const unsigned char *ct; size_t ctlen;
    size_t auth_offset;
} Request;

/* V_PY (not NTS, or outside what this module handles), V_DROP, or -1: an NTS
 * request to go on with. Same rules, same order, as parse_client_request. */
static int parse(const unsigned char *d, size_t len, Request *r) {
    unsigned first = d[0], version = (first >> 3) & 7, mode = first & 7;
    if (version < 1 || version > 4) return V_DROP;
    if (mode == 0 || mode == 6 || mode == 7) return V_DROP;
    if (version < 4 || len == HEADER || len > MAX_PACKET) return V_PY; /* check_trailer */
    int have_uid = 0, have_cookie = 0, dup = 0, mac = 0, bad_placeholder = 0;
    size_t off = HEADER, last_off = 0, placeholder_size = 0;
    unsigned last_type = 0x10000;
    int have_last = 0;
    memset(r, 0, sizeof *r);
    while (off < len) {
        size_t rest = len - off;
        if (rest == 4 || rest == 20 || rest == 24) { mac = 1; break; }
        if (rest < MIN_EF) return V_DROP;
        unsigned kind = be16(d + off);
        size_t size = be16(d + off + 2);
        if (size < MIN_EF || size % 4 || size > rest) return V_DROP;
        if (kind == EF_COOKIE) {
            if (have_cookie) dup = 1;
            have_cookie = 1;
            r->cookie = d + off + 4; r->cookielen = size - 4;
        } else if (kind == EF_UID) {
            if (have_uid) dup = 1;
            have_uid = 1;
            r->uid = d + off + 4; r->uidlen = size - 4;
        } else if (kind == EF_PLACEHOLDER) {
            /* compared with the cookie's size once it is known (a set in Python) */
            if (r->placeholders && placeholder_size != size - 4) bad_placeholder = 1;
            placeholder_size = size - 4;
            r->placeholders++;
        }
        last_type = kind; last_off = off; have_last = 1;
        off += size;
    }
    if (dup) return V_DROP;
    if (!have_cookie) return V_PY;
    if (!have_uid || r->uidlen < UID_MIN) return V_DROP;
    if (r->placeholders && (bad_placeholder || placeholder_size != r->cookielen)) return V_DROP;
    if (mac || !have_last || last_type != EF_AUTH) return V_DROP;
    /* the authenticator: nonce length, ciphertext length, padded nonce, ciphertext */
    const unsigned char *v = d + last_off + 4;
    size_t vlen = off - last_off - 4;
    if (vlen < 4) return V_DROP;
    size_t nlen = be16(v), clen = be16(v + 2);
    if (nlen < NONCE || clen < TAG) return V_DROP;
    size_t ct_start = 4 + nlen + ((4 - nlen % 4) % 4);
    if (ct_start + clen > vlen) return V_DROP;
    r->nonce = v + 4; r->noncelen = nlen;
    r->ct = v + ct_start; r->ctlen = clen;
    r->auth_offset = last_off;
    if (mode != 3) return V_DROP;
    return -1;
}

/* The cookie's C2S||S2C, or 0 (unknown key, forged, malformed): open_cookie. */
static int open_cookie(Engine *e, const Request *r, unsigned char keys[COOKIE_PLAIN]) {
    if (r->cookielen < COOKIE_HEAD + 16) return 0;
    uint32_t id = be32(r->cookie);
    const CookieKey *k = NULL;
    for (int i = e->nkeys - 1; i >= 0; i--)
        if (e->keys[i].id == id) { k = &e->keys[i]; break; }
    if (k == NULL) return 0;
    /* only a cookie that decrypts to exactly two keys is ours: another size never does */
    if (r->cookielen != COOKIE_BYTES) return 0;
    unsigned char ad[6];
    memcpy(ad, r->cookie, 4); put16(ad + 4, AEAD_SIV_CMAC_256);
    return siv_open((Siv *)&k->siv, ad, 6, r->cookie + 4, NONCE, r->cookie + COOKIE_HEAD,
                    COOKIE_BYTES - COOKIE_HEAD, keys);
}

static uint64_t now_ntp(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t sec = (uint64_t)ts.tv_sec + NTP_UNIX_OFFSET;
    uint64_t frac = (((uint64_t)ts.tv_nsec << 32) + 500000000ull) / 1000000000ull;
    return (sec << 32) + frac;
}

static size_t put_field(unsigned char *p, unsigned type, const unsigned char *value, size_t len) {
    size_t padded = len + ((4 - len % 4) % 4);
    if (padded < MIN_EF - 4) padded = MIN_EF - 4;
    put16(p, type); put16(p + 2, (unsigned)(4 + padded));
    memcpy(p + 4, value, len);
    memset(p + 4 + len, 0, padded - len);
    return 4 + padded;
}

/* The authenticated reply (authenticated_reply + build_server_reply); its length, or 0.
 * random: (1 + placeholders) cookie nonces, then the reply's nonce. */
static size_t auth_reply(Engine *e, const unsigned char *d, size_t len, const Request *r,
                         const unsigned char keys[COOKIE_PLAIN], const unsigned char *tmpl,
                         uint64_t rx, uint64_t tx, const unsigned char *random,
                         unsigned char *out, size_t cap) {
    size_t wanted = 1 + (size_t)r->placeholders;
    size_t uid_field = 4 + r->uidlen; /* a multiple of 4 and >= 36 already */
    size_t fixed = HEADER + uid_field + 4 + 4 + NONCE + TAG; /* auth field without cookies */
    size_t kept = wanted;
    while (kept && fixed + kept * (4 + COOKIE_BYTES) > len) kept--;
    size_t total = fixed + kept * (4 + COOKIE_BYTES);
    if (total > cap) return 0;
    memcpy(out, tmpl, HEADER);
    out[2] = d[2];
    memcpy(out + 24, d + 40, 8);
    put64(out + 32, rx);
    size_t o = HEADER + put_field(out + HEADER, EF_UID, r->uid, r->uidlen);
    size_t ad_len = o;
    /* the cookies, sealed under the primary key, as the plaintext */
    unsigned char plain[10 * (4 + COOKIE_BYTES)];
    if (kept > 10) return 0;
    const CookieKey *primary = &e->keys[e->nkeys - 1];
    unsigned char cad[6];
    put32(cad, primary->id); put16(cad + 4, AEAD_SIV_CMAC_256);
    for (size_t i = 0; i < kept; i++) {
        unsigned char *f = plain + i * (4 + COOKIE_BYTES);
        put16(f, EF_COOKIE); put16(f + 2, 4 + COOKIE_BYTES);
        memcpy(f + 4, cad, 4);
        memcpy(f + 8, random + i * NONCE, NONCE);
        if (!siv_seal((Siv *)&primary->siv, cad, 6, random + i * NONCE, NONCE, keys, COOKIE_PLAIN,
                      f + 4 + COOKIE_HEAD))
            return 0;
    }
    size_t plain_len = kept * (4 + COOKIE_BYTES);
    const unsigned char *nonce = random + wanted * NONCE;
    unsigned char *auth = out + o;
    size_t ct_len = plain_len + TAG;
    put16(auth, EF_AUTH); put16(auth + 2, (unsigned)(8 + NONCE + ct_len));
    put16(auth + 4, NONCE); put16(auth + 6, (unsigned)ct_len);
    memcpy(auth + 8, nonce, NONCE);
    /* the transmit time is inside the authenticated data: read it last */
    put64(out + 40, tx ? tx : now_ntp());
    if (!siv_key(&e->s2c, keys + KEY)
        || !siv_seal(&e->s2c, out, ad_len, nonce, NONCE, plain, plain_len, auth + 8 + NONCE))
        return 0;
    return total;
}

static size_t nak_reply(const unsigned char *d, const Request *r, unsigned char *out, size_t cap) {
    size_t total = HEADER + 4 + r->uidlen;
    if (total > cap) return 0;
    memset(out, 0, HEADER);
    out[0] = (unsigned char)((3 << 6) | (((d[0] >> 3) & 7) << 3) | 4);
    out[2] = d[2];
    put32(out + 12, NTSN);
    memcpy(out + 24, d + 40, 8);
    put_field(out + HEADER, EF_UID, r->uid, r->uidlen);
    return total;
}

static void Engine_dealloc(Engine *self) {
    free_keys(self->keys, self->nkeys);
    siv_free(&self->c2s);
    siv_free(&self->s2c);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Engine_init(Engine *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"keys", NULL};
    PyObject *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &seq)) return -1;
    PyObject *fast = PySequence_Fast(seq, "keys: a sequence of (key id, 32-byte key)");
    if (!fast) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n < 1 || n > MAX_KEYS) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "keys: between 1 and 1025 cookie keys");
        return -1;
    }
    CookieKey *keys = PyMem_Calloc((size_t)n, sizeof(CookieKey));  /* zeroed: free_keys is safe */
    if (!keys) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long id;
        const char *key;
        Py_ssize_t keylen;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "ky#", &id, &key, &keylen)
            || keylen != KEY || id > 0xFFFFFFFFul) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "keys: (key id < 2**32, 32-byte key) each");
            free_keys(keys, (int)n);
            Py_DECREF(fast);
            return -1;
        }
        keys[i].id = (uint32_t)id;
        if (!siv_new(&keys[i].siv) || !siv_key(&keys[i].siv, (const unsigned char *)key)) {
            free_keys(keys, (int)n);
            Py_DECREF(fast);
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-128");
            return -1;
        }
    }
    Py_DECREF(fast);
    free_keys(self->keys, self->nkeys);
    self->keys = keys;
    self->nkeys = (int)n;
    if (!self->ready) {
        if (!siv_new(&self->c2s) || !siv_new(&self->s2c)) {
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-128");
            return -1;
        }
        self->ready = 1;
    }
    return 0;
}

static int get_buffer(PyObject *o, Py_buffer *b, int writable, const char *name, size_t need) {
    if (PyObject_GetBuffer(o, b, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) return -1;
    if ((size_t)b->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: %zu bytes needed, %zd given", name, need, b->len);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(serve_doc,
"serve(data, stride, lengths, rx, templates, out, out_stride, random, tx_ntp,\n"
"      verdicts, names, name_stride, namelen, iov, hdr, judge_only=False)\n"
"      -> (replies, random_used)\n\n"
"Request k is data[k*stride:][:lengths[k]] (lengths: n int32; a slot of 48 bytes or\n"
"less, or negative, is skipped), rx[k] its receive time (n uint64, NTP format),\n"
"templates the plain responder's reply header per NTP version (8 x 48 bytes; a first\n"
"byte of 0: version not accepted, handed back). verdicts[k] gets 0 skip, 1 PY (the\n"
"Python path decides), 2 authenticated, 3 NAK, 4 drop. The reply to k is written\n"
"at out[k*out_stride:]; for the j-th reply iov[j] and hdr[j] (struct iovec, struct\n"
"mmsghdr) are filled for sendmmsg, its address at names[k*name_stride:]. tx_ntp 0:\n"
"read CLOCK_REALTIME for each reply. Returns the replying slots, in order, and how\n"
"many random bytes were used (requests past the end of `random` are handed back).\n"
"judge_only: verdicts only, no reply, no random bytes used (a server whose access\n"
"lists or rate limit decide first; the allowed slots are then served again).");

static PyObject *Engine_serve(Engine *self, PyObject *args) {
    PyObject *o_data, *o_lengths, *o_rx, *o_tmpl, *o_out, *o_random, *o_verdicts, *o_names,
        *o_iov, *o_hdr;
    Py_ssize_t stride, out_stride, name_stride, namelen;
    unsigned long long tx_ntp;
    int judge_only = 0;
    if (!PyArg_ParseTuple(args, "OnOOOOnOKOOnnOO|p", &o_data, &stride, &o_lengths, &o_rx,
                          &o_tmpl, &o_out, &out_stride, &o_random, &tx_ntp, &o_verdicts,
                          &o_names, &name_stride, &namelen, &o_iov, &o_hdr, &judge_only))
        return NULL;
    if (!self->ready || !self->keys) {
        PyErr_SetString(PyExc_RuntimeError, "Engine not initialised");
        return NULL;
    }
    if (stride < HEADER || out_stride < HEADER || name_stride < 0 || namelen < 0
        || namelen > name_stride) {
        PyErr_SetString(PyExc_ValueError, "strides: at least 48; namelen <= name_stride");
        return NULL;
    }
    Py_buffer lengths, data = {0}, rx = {0}, tmpl = {0}, out = {0}, random = {0},
        verdicts = {0}, names = {0}, iov = {0}, hdr = {0};
    if (get_buffer(o_lengths, &lengths, 0, "lengths", 0) < 0) return NULL;
    size_t n = (size_t)lengths.len / sizeof(int32_t);
    PyObject *result = NULL, *slots = NULL;
    if (get_buffer(o_data, &data, 0, "data", n * (size_t)stride) < 0) goto done;
    if (get_buffer(o_rx, &rx, 0, "rx", n * 8) < 0) goto done;
    if (get_buffer(o_tmpl, &tmpl, 0, "templates", 8 * HEADER) < 0) goto done;
    if (get_buffer(o_out, &out, 1, "out", n * (size_t)out_stride) < 0) goto done;
    if (get_buffer(o_random, &random, 0, "random", 0) < 0) goto done;
    if (get_buffer(o_verdicts, &verdicts, 1, "verdicts", n) < 0) goto done;
    if (get_buffer(o_names, &names, 0, "names", n * (size_t)name_stride) < 0) goto done;
    if (get_buffer(o_iov, &iov, 1, "iov", n * sizeof(struct iovec)) < 0) goto done;
    if (get_buffer(o_hdr, &hdr, 1, "hdr", n * sizeof(struct mmsghdr)) < 0) goto done;
    slots = PyList_New(0);
    if (!slots) goto done;

    const unsigned char *dbase = data.buf, *tbase = tmpl.buf, *rnd = random.buf;
    unsigned char *obase = out.buf, *vbase = verdicts.buf, *nbase = names.buf;
    struct iovec *iovs = iov.buf;
    struct mmsghdr *hdrs = hdr.buf;
    size_t used = 0, replies = 0;
    int32_t len_k;
    uint64_t rx_k;
    for (size_t k = 0; k < n; k++) {
        memcpy(&len_k, (const char *)lengths.buf + k * 4, 4);
        memcpy(&rx_k, (const char *)rx.buf + k * 8, 8);
        vbase[k] = V_SKIP;
        if (len_k <= HEADER) continue;
        if ((size_t)len_k > (size_t)stride) { vbase[k] = V_PY; continue; }
        const unsigned char *d = dbase + k * (size_t)stride;
        Request r;
        int v = parse(d, (size_t)len_k, &r);
        if (v >= 0) { vbase[k] = (unsigned char)v; continue; }
        const unsigned char *t = tbase + HEADER * (size_t)((d[0] >> 3) & 7);
        if (t[0] == 0) { vbase[k] = V_PY; continue; } /* version refused: Python counts it */
        unsigned char *o = obase + k * (size_t)out_stride;
        size_t reply_len;
        unsigned char keys[COOKIE_PLAIN];
        if (!open_cookie(self, &r, keys)) {
            vbase[k] = V_NAK;
            if (judge_only) continue;
            reply_len = nak_reply(d, &r, o, (size_t)out_stride);
        } else {
            unsigned char scratch[MAX_PACKET];
            if (!siv_key(&self->c2s, keys)
                || !siv_open(&self->c2s, d, r.auth_offset, r.nonce, r.noncelen, r.ct, r.ctlen,
                             scratch)) {
                OPENSSL_cleanse(keys, sizeof keys);
                vbase[k] = V_DROP;
                continue;
            }
            if (judge_only) {
                OPENSSL_cleanse(keys, sizeof keys);
                vbase[k] = V_AUTH;
                continue;
            }
            size_t need = (2 + (size_t)r.placeholders) * NONCE;
            if (used + need > (size_t)random.len) {
                OPENSSL_cleanse(keys, sizeof keys);
                vbase[k] = V_PY;
                continue;
            }
            reply_len = auth_reply(self, d, (size_t)len_k, &r, keys, t, rx_k, tx_ntp,
                                   rnd + used, o, (size_t)out_stride);
            OPENSSL_cleanse(keys, sizeof keys);
            used += need;
            vbase[k] = reply_len ? V_AUTH : V_DROP;
        }
        if (!reply_len) continue;
        iovs[replies].iov_base = o;
        iovs[replies].iov_len = reply_len;
        memset(&hdrs[replies], 0, sizeof hdrs[replies]);
        hdrs[replies].msg_hdr.msg_name = nbase + k * (size_t)name_stride;
        hdrs[replies].msg_hdr.msg_namelen = (socklen_t)namelen;
        hdrs[replies].msg_hdr.msg_iov = &iovs[replies];
        hdrs[replies].msg_hdr.msg_iovlen = 1;
        replies++;
        PyObject *ko = PyLong_FromSize_t(k);
        if (!ko || PyList_Append(slots, ko) < 0) { Py_XDECREF(ko); goto done; }
        Py_DECREF(ko);
    }
    result = Py_BuildValue("(On)", slots, (Py_ssize_t)used);
done:
    Py_XDECREF(slots);
    PyBuffer_Release(&lengths);
    if (data.obj) PyBuffer_Release(&data);
    if (rx.obj) PyBuffer_Release(&rx);
    if (tmpl.obj) PyBuffer_Release(&tmpl);
    if (out.obj) PyBuffer_Release(&out);
    if (random.obj) PyBuffer_Release(&random);
    if (verdicts.obj) PyBuffer_Release(&verdicts);
    if (names.obj) PyBuffer_Release(&names);
    if (iov.obj) PyBuffer_Release(&iov);
    if (hdr.obj) PyBuffer_Release(&hdr);
    return result;
}

/* AES-SIV alone, for the tests that hold it against `cryptography` and RFC 5297. */
static PyObject *siv_apply(PyObject *args, int seal) {
    Py_buffer key, ad, nonce, in;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*y*", &key, &ad, &nonce, &in)) return NULL;
    Siv s = {0};
    unsigned char out[SCRATCH];
    if (key.len != KEY || ad.len > MAX_PACKET || nonce.len > MAX_PACKET
        || in.len > MAX_PACKET || (!seal && in.len < TAG)) {
        PyErr_SetString(PyExc_ValueError, "a 32-byte key; inputs of at most 1140 bytes");
    } else if (!siv_new(&s) || !siv_key(&s, key.buf)) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-128");
    } else if (seal) {
        if (siv_seal(&s, ad.buf, (size_t)ad.len, nonce.buf, (size_t)nonce.len, in.buf,
                     (size_t)in.len, out))
            result = PyBytes_FromStringAndSize((char *)out, in.len + TAG);
        else
            PyErr_SetString(PyExc_RuntimeError, "AES-SIV failed");
    } else if (siv_open(&s, ad.buf, (size_t)ad.len, nonce.buf, (size_t)nonce.len, in.buf,
                        (size_t)in.len, out)) {
        result = PyBytes_FromStringAndSize((char *)out, in.len - TAG);
    } else {
        result = Py_NewRef(Py_None);
    }
    siv_free(&s);
    PyBuffer_Release(&key); PyBuffer_Release(&ad); PyBuffer_Release(&nonce);
    PyBuffer_Release(&in);
    return result;
}

static PyObject *mod_siv_seal(PyObject *m, PyObject *args) { (void)m; return siv_apply(args, 1); }
static PyObject *mod_siv_open(PyObject *m, PyObject *args) { (void)m; return siv_apply(args, 0); }

static PyMethodDef module_methods[] = {
    {"siv_seal", mod_siv_seal, METH_VARARGS,
     "siv_seal(key32, ad, nonce, plaintext) -> V || C (AEAD_AES_SIV_CMAC_256)"},
    {"siv_open", mod_siv_open, METH_VARARGS,
     "siv_open(key32, ad, nonce, V || C) -> plaintext, or None if it does not verify"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef Engine_methods[] = {
    {"serve", (PyCFunction)Engine_serve, METH_VARARGS, serve_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ntpd_py.workers._nts_fast.Engine",
    .tp_doc = PyDoc_STR("Engine(keys): the server's cookie keys [(key id, 32-byte key), ...],"
                        " the last one the primary"),
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_nts_fast",
    .m_doc = "The NTS server's per-batch work in C; see workers/_nts_fast.c.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__nts_fast(void) {
    if (PyType_Ready(&EngineType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "SKIP", V_SKIP);
    PyModule_AddIntConstant(m, "PY", V_PY);
    PyModule_AddIntConstant(m, "AUTHENTICATED", V_AUTH);
    PyModule_AddIntConstant(m, "NAK", V_NAK);
    PyModule_AddIntConstant(m, "DROP", V_DROP);
    PyModule_AddIntConstant(m, "RANDOM_PER_REQUEST", 11 * NONCE);
    return m;
}
