/* A pickle machine for what torch.save writes (protocol 2, binary opcodes of
 * later protocols too). It never calls anything: GLOBAL only names a callable,
 * and REDUCE interprets the three callables a checkpoint needs (OrderedDict,
 * _rebuild_tensor_v2, _rebuild_parameter); any other call yields an opaque
 * OBJECT. Every count, length and index is bounded (pth.h), the machine has
 * no recursion, and any other opcode is an error naming it and its offset. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/pth.h"
#include "util/err.h"

typedef struct {
    const uint8_t *p;
    size_t n, pos, op_pos;
    uint8_t op;
    pth_arena *arena;
    pth_obj **stack;
    size_t sp, scap;
    size_t marks[PTH_MAX_MARKS];
    int nmarks;
    pth_obj **memo;
    size_t memo_cap, memo_count;
    size_t objects;
    hadm_error *err;
} vm;

static hadm_status vm_fail(vm *v, const char *fmt, ...) HADM_PRINTF(2, 3);
static hadm_status vm_fail(vm *v, const char *fmt, ...)
{
    char what[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    int c = v->op >= 0x20 && v->op < 0x7f ? v->op : '?';
    hadm_fail(v->err, HADM_ERR_FORMAT, "pickle opcode 0x%02x '%c' at byte %zu: %s", v->op, c, v->op_pos, what);
    return HADM_ERR_FORMAT;   /* a visible constant, so the compiler sees every failure path */
}

static pth_obj *new_obj(vm *v, pth_kind kind)
{
    if (v->objects >= PTH_MAX_OBJECTS)
        return NULL;
    pth_obj *o = pth_arena_alloc(v->arena, sizeof *o);
    if (o) {
        memset(o, 0, sizeof *o);
        o->kind = kind;
        v->objects++;
    }
    return o;
}

#define NEW(var, kind)                                                                     \
    pth_obj *var = new_obj(v, kind);                                                       \
    if (!var)                                                                              \
        return vm_fail(v, "more than %u objects or out of memory", (unsigned)PTH_MAX_OBJECTS)

static hadm_status need(vm *v, size_t k)
{
    if (v->n - v->pos < k)
        return vm_fail(v, "truncated: needs %zu more bytes, %zu left", k, v->n - v->pos);
    return HADM_OK;
}

static uint64_t le(const uint8_t *p, int k)
{
    uint64_t x = 0;
    for (int i = k - 1; i >= 0; i--)
        x = x << 8 | p[i];
    return x;
}

static size_t fence(const vm *v) { return v->nmarks ? v->marks[v->nmarks - 1] : 0; }

static hadm_status push(vm *v, pth_obj *o)
{
    if (v->sp == v->scap) {
        if (v->scap >= PTH_MAX_STACK)
            return vm_fail(v, "stack deeper than %u values", (unsigned)PTH_MAX_STACK);
        size_t cap = v->scap ? v->scap * 2 : 256;
        pth_obj **s = realloc(v->stack, cap * sizeof *s);
        if (!s)
            return vm_fail(v, "out of memory");
        v->stack = s;
        v->scap = cap;
    }
    v->stack[v->sp++] = o;
    return HADM_OK;
}

static hadm_status pop(vm *v, pth_obj **o)
{
    if (v->sp <= fence(v))
        return vm_fail(v, "stack underflow");
    *o = v->stack[--v->sp];
    return HADM_OK;
}

static hadm_status top(vm *v, pth_obj **o)
{
    if (v->sp <= fence(v))
        return vm_fail(v, "stack underflow");
    *o = v->stack[v->sp - 1];
    return HADM_OK;
}

/* Items pushed since the last MARK: [*first, sp); the mark is popped. */
static hadm_status pop_mark(vm *v, size_t *first)
{
    if (!v->nmarks)
        return vm_fail(v, "no MARK on the stack");
    *first = v->marks[--v->nmarks];
    return HADM_OK;
}

static hadm_status seq_add(vm *v, pth_obj *s, pth_obj *item)
{
    if (s->u.seq.n == s->u.seq.cap) {
        size_t cap = s->u.seq.cap ? s->u.seq.cap * 2 : 4;
        pth_obj **a = pth_arena_alloc(v->arena, cap * sizeof *a);
        if (!a)
            return vm_fail(v, "out of memory");
        if (s->u.seq.n)
            memcpy(a, s->u.seq.items, s->u.seq.n * sizeof *a);
        s->u.seq.items = a;
        s->u.seq.cap = cap;
    }
    s->u.seq.items[s->u.seq.n++] = item;
    return HADM_OK;
}

static hadm_status dict_add(vm *v, pth_obj *d, pth_obj *k, pth_obj *val)
{
    if (d->u.dict.n == d->u.dict.cap) {
        size_t cap = d->u.dict.cap ? d->u.dict.cap * 2 : 8;
        pth_obj **ks = pth_arena_alloc(v->arena, cap * sizeof *ks);
        pth_obj **vs = pth_arena_alloc(v->arena, cap * sizeof *vs);
        if (!ks || !vs)
            return vm_fail(v, "out of memory");
        if (d->u.dict.n) {
            memcpy(ks, d->u.dict.keys, d->u.dict.n * sizeof *ks);
            memcpy(vs, d->u.dict.vals, d->u.dict.n * sizeof *vs);
        }
        d->u.dict.keys = ks;
        d->u.dict.vals = vs;
        d->u.dict.cap = cap;
    }
    d->u.dict.keys[d->u.dict.n] = k;
    d->u.dict.vals[d->u.dict.n++] = val;
    return HADM_OK;
}

static char *copy_str(vm *v, const uint8_t *s, size_t n)
{
    char *c = pth_arena_alloc(v->arena, n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = 0;
    }
    return c;
}

static hadm_status push_string(vm *v, pth_kind kind, int lenbytes)
{
    hadm_status s = need(v, (size_t)lenbytes);
    if (s)
        return s;
    uint64_t len = le(v->p + v->pos, lenbytes);
    v->pos += (size_t)lenbytes;
    if (len > PTH_MAX_STRING)
        return vm_fail(v, "string of %llu bytes exceeds the %u-byte limit", (unsigned long long)len,
                       (unsigned)PTH_MAX_STRING);
    if ((s = need(v, (size_t)len)))
        return s;
    NEW(o, kind);
    if (!(o->u.str.s = copy_str(v, v->p + v->pos, (size_t)len)))
        return vm_fail(v, "out of memory");
    o->u.str.len = (size_t)len;
    v->pos += (size_t)len;
    return push(v, o);
}

/* Two's-complement little-endian integer of k bytes (LONG1/LONG4). */
static hadm_status push_long(vm *v, int lenbytes)
{
    hadm_status s = need(v, (size_t)lenbytes);
    if (s)
        return s;
    uint64_t k = le(v->p + v->pos, lenbytes);
    v->pos += (size_t)lenbytes;
    if (k > PTH_MAX_STRING)
        return vm_fail(v, "integer of %llu bytes exceeds the limit", (unsigned long long)k);
    if ((s = need(v, (size_t)k)))
        return s;
    NEW(o, PTH_INT);
    if (k > 8) {
        o->big = 1;
    } else if (k > 0) {
        uint64_t x = le(v->p + v->pos, (int)k);
        if (k < 8 && (x >> (8 * k - 1)) & 1)
            x |= ~0ull << (8 * k);
        o->u.i = (int64_t)x;
    }
    v->pos += (size_t)k;
    return push(v, o);
}

static hadm_status push_int(vm *v, int bytes, int is_signed)
{
    hadm_status s = need(v, (size_t)bytes);
    if (s)
        return s;
    uint64_t x = le(v->p + v->pos, bytes);
    v->pos += (size_t)bytes;
    NEW(o, PTH_INT);
    o->u.i = is_signed ? (int64_t)(int32_t)(uint32_t)x : (int64_t)x;
    return push(v, o);
}

/* GLOBAL's operands: "module\nname\n", each at most 256 bytes. */
static hadm_status read_line(vm *v, char **out)
{
    const uint8_t *start = v->p + v->pos;
    size_t room = v->n - v->pos, lim = room < 257 ? room : 257;
    const uint8_t *nl = memchr(start, '\n', lim);
    if (!nl)
        return vm_fail(v, "GLOBAL name not terminated within 256 bytes");
    if (!(*out = copy_str(v, start, (size_t)(nl - start))))
        return vm_fail(v, "out of memory");
    v->pos += (size_t)(nl - start) + 1;
    return HADM_OK;
}

static hadm_status push_global(vm *v, char *module, char *name)
{
    NEW(o, PTH_GLOBAL);
    o->u.global.module = module;
    o->u.global.name = name;
    return push(v, o);
}

static pth_obj *tuple_from(vm *v, pth_kind kind, size_t first)
{
    pth_obj *t = new_obj(v, kind);
    if (!t)
        return NULL;
    size_t n = v->sp - first;
    if (n) {
        if (!(t->u.seq.items = pth_arena_alloc(v->arena, n * sizeof(pth_obj *))))
            return NULL;
        memcpy(t->u.seq.items, v->stack + first, n * sizeof(pth_obj *));
    }
    t->u.seq.n = t->u.seq.cap = n;
    v->sp = first;
    return t;
}

static hadm_status push_tuple_n(vm *v, size_t n)
{
    if (v->sp - fence(v) < n)
        return vm_fail(v, "stack underflow");
    pth_obj *t = tuple_from(v, PTH_TUPLE, v->sp - n);
    if (!t)
        return vm_fail(v, "out of memory");
    return push(v, t);
}

static hadm_status memo_put(vm *v, uint64_t idx)
{
    pth_obj *o = NULL;
    hadm_status s = top(v, &o);
    if (s)
        return s;
    /* Picklers number memo slots in order, so a slot never exceeds the values made so far. */
    if (idx >= PTH_MAX_MEMO || idx > v->objects)
        return vm_fail(v, "memo index %llu beyond the limit (%zu values so far)", (unsigned long long)idx,
                       v->objects);
    if (idx >= v->memo_cap) {
        size_t cap = v->memo_cap ? v->memo_cap : 1024;
        while (cap <= idx)
            cap *= 2;
        pth_obj **m = realloc(v->memo, cap * sizeof *m);
        if (!m)
            return vm_fail(v, "out of memory");
        memset(m + v->memo_cap, 0, (cap - v->memo_cap) * sizeof *m);
        v->memo = m;
        v->memo_cap = cap;
    }
    if (!v->memo[idx])
        v->memo_count++;
    v->memo[idx] = o;
    return HADM_OK;
}

static hadm_status memo_get(vm *v, uint64_t idx)
{
    if (idx >= v->memo_cap || !v->memo[idx])
        return vm_fail(v, "memo slot %llu was never stored", (unsigned long long)idx);
    return push(v, v->memo[idx]);
}

static hadm_status op_index(vm *v, int bytes, int put)
{
    hadm_status s = need(v, (size_t)bytes);
    if (s)
        return s;
    uint64_t idx = le(v->p + v->pos, bytes);
    v->pos += (size_t)bytes;
    return put ? memo_put(v, idx) : memo_get(v, idx);
}

/* SETITEMS / APPENDS / ADDITEMS: items since the mark go into the value below it. */
static hadm_status fill_from_mark(vm *v, int pairs)
{
    size_t first = 0;
    hadm_status s = pop_mark(v, &first);
    if (s)
        return s;
    if (first == 0 || first <= fence(v))
        return vm_fail(v, "no container below the MARK");
    pth_obj *c = v->stack[first - 1];
    size_t n = v->sp - first;
    if (pairs && n % 2)
        return vm_fail(v, "odd number of items (%zu) for a dict", n);
    if (c->kind == PTH_OBJECT) {
        /* e.g. defaultdict or deque state: not needed, dropped */
    } else if (pairs && c->kind == PTH_DICT) {
        for (size_t i = first; i < v->sp && !s; i += 2)
            s = dict_add(v, c, v->stack[i], v->stack[i + 1]);
    } else if (!pairs && c->kind == PTH_LIST) {
        for (size_t i = first; i < v->sp && !s; i++)
            s = seq_add(v, c, v->stack[i]);
    } else {
        return vm_fail(v, "cannot add items to a %s", pth_kind_name(c->kind));
    }
    v->sp = first;
    return s;
}

static hadm_status op_setitem(vm *v)
{
    pth_obj *val = NULL, *key = NULL, *d = NULL;
    hadm_status s;
    if ((s = pop(v, &val)) || (s = pop(v, &key)) || (s = top(v, &d)))
        return s;
    if (d->kind == PTH_OBJECT)
        return HADM_OK;
    if (d->kind != PTH_DICT)
        return vm_fail(v, "SETITEM on a %s", pth_kind_name(d->kind));
    return dict_add(v, d, key, val);
}

static hadm_status op_append(vm *v)
{
    pth_obj *val = NULL, *l = NULL;
    hadm_status s;
    if ((s = pop(v, &val)) || (s = top(v, &l)))
        return s;
    if (l->kind == PTH_OBJECT)
        return HADM_OK;
    if (l->kind != PTH_LIST)
        return vm_fail(v, "APPEND to a %s", pth_kind_name(l->kind));
    return seq_add(v, l, val);
}

static hadm_status op_collection(vm *v, pth_kind kind)
{
    size_t first = 0;
    hadm_status s = pop_mark(v, &first);
    if (s)
        return s;
    if (kind == PTH_DICT) {
        if ((v->sp - first) % 2)
            return vm_fail(v, "odd number of items for a dict");
        NEW(d, PTH_DICT);
        for (size_t i = first; i < v->sp && !s; i += 2)
            s = dict_add(v, d, v->stack[i], v->stack[i + 1]);
        v->sp = first;
        return s ? s : push(v, d);
    }
    pth_obj *t = tuple_from(v, kind, first);
    if (!t)
        return vm_fail(v, "out of memory");
    return push(v, t);
}

static hadm_status op_stack_global(vm *v)
{
    pth_obj *name = NULL, *module = NULL;
    hadm_status s;
    if ((s = pop(v, &name)) || (s = pop(v, &module)))
        return s;
    if (name->kind != PTH_STR || module->kind != PTH_STR)
        return vm_fail(v, "STACK_GLOBAL needs two strings");
    return push_global(v, module->u.str.s, name->u.str.s);
}

static hadm_status op_reduce(vm *v)
{
    pth_obj *args = NULL, *fn = NULL;
    hadm_status s;
    if ((s = pop(v, &args)) || (s = pop(v, &fn)))
        return s;
    NEW(o, PTH_OBJECT);
    char why[200];
    if (pth_reduce(v->arena, fn, args, o, why, sizeof why))
        return vm_fail(v, "%s", why);
    return push(v, o);
}

static hadm_status op_persid(vm *v)
{
    pth_obj *pid = NULL;
    hadm_status s = pop(v, &pid);
    if (s)
        return s;
    NEW(o, PTH_STORAGE);
    char why[200];
    if (pth_persistent_load(v->arena, pid, o, why, sizeof why))
        return vm_fail(v, "%s", why);
    return push(v, o);
}

/* NEWOBJ (cls, args) and NEWOBJ_EX (cls, args, kwargs): an opaque instance. */
static hadm_status op_newobj(vm *v, int with_kwargs)
{
    pth_obj *kw = NULL, *args = NULL, *cls = NULL;
    hadm_status s = with_kwargs ? pop(v, &kw) : HADM_OK;
    if (s || (s = pop(v, &args)) || (s = pop(v, &cls)))
        return s;
    NEW(o, PTH_OBJECT);
    if (cls->kind == PTH_GLOBAL)
        o->u.global = cls->u.global;
    return push(v, o);
}

static hadm_status op_pop(vm *v)
{
    if (v->nmarks && v->marks[v->nmarks - 1] == v->sp) {
        v->nmarks--;   /* as CPython: POP on an empty frame drops the mark */
        return HADM_OK;
    }
    pth_obj *o = NULL;
    return pop(v, &o);
}

static hadm_status op_pop_mark(vm *v)
{
    size_t first = 0;
    hadm_status s = pop_mark(v, &first);
    if (!s)
        v->sp = first;
    return s;
}

static hadm_status op_mark(vm *v)
{
    if (v->nmarks >= PTH_MAX_MARKS)
        return vm_fail(v, "MARKs nested deeper than %d", PTH_MAX_MARKS);
    v->marks[v->nmarks++] = v->sp;
    return HADM_OK;
}

static hadm_status op_simple(vm *v, pth_kind kind, int64_t i)
{
    NEW(o, kind);
    o->u.i = i;
    return push(v, o);
}

static hadm_status op_float(vm *v)
{
    hadm_status s = need(v, 8);
    if (s)
        return s;
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits = bits << 8 | v->p[v->pos + i];   /* big-endian */
    v->pos += 8;
    NEW(o, PTH_FLOAT);
    memcpy(&o->u.f, &bits, sizeof bits);
    return push(v, o);
}

static hadm_status skip(vm *v, size_t k)
{
    hadm_status s = need(v, k);
    if (!s)
        v->pos += k;
    return s;
}

static hadm_status step(vm *v, int *stop)
{
    pth_obj *o = NULL;
    hadm_status s;
    switch (v->op) {
    case 0x80: return skip(v, 1);                                   /* PROTO */
    case 0x95: return skip(v, 8);                                   /* FRAME */
    case '.': *stop = 1; return HADM_OK;                            /* STOP */
    case '(': return op_mark(v);
    case '0': return op_pop(v);
    case '1': return op_pop_mark(v);
    case '2': return (s = top(v, &o)) ? s : push(v, o);              /* DUP */
    case 'N': return op_simple(v, PTH_NONE, 0);
    case 0x88: return op_simple(v, PTH_BOOL_V, 1);                  /* NEWTRUE */
    case 0x89: return op_simple(v, PTH_BOOL_V, 0);                  /* NEWFALSE */
    case 'J': return push_int(v, 4, 1);                             /* BININT */
    case 'K': return push_int(v, 1, 0);                             /* BININT1 */
    case 'M': return push_int(v, 2, 0);                             /* BININT2 */
    case 0x8a: return push_long(v, 1);                              /* LONG1 */
    case 0x8b: return push_long(v, 4);                              /* LONG4 */
    case 'G': return op_float(v);                                   /* BINFLOAT */
    case 'X': return push_string(v, PTH_STR, 4);                    /* BINUNICODE */
    case 0x8c: return push_string(v, PTH_STR, 1);                   /* SHORT_BINUNICODE */
    case 0x8d: return push_string(v, PTH_STR, 8);                   /* BINUNICODE8 */
    case 'T': return push_string(v, PTH_STR, 4);                    /* BINSTRING */
    case 'U': return push_string(v, PTH_STR, 1);                    /* SHORT_BINSTRING */
    case 'B': return push_string(v, PTH_BYTES, 4);                  /* BINBYTES */
    case 'C': return push_string(v, PTH_BYTES, 1);                  /* SHORT_BINBYTES */
    case 0x8e: case 0x96: return push_string(v, PTH_BYTES, 8);      /* BINBYTES8, BYTEARRAY8 */
    case '}': return op_simple(v, PTH_DICT, 0);                     /* EMPTY_DICT */
    case ']': case 0x8f: return op_simple(v, PTH_LIST, 0);          /* EMPTY_LIST, EMPTY_SET */
    case ')': return op_simple(v, PTH_TUPLE, 0);                    /* EMPTY_TUPLE */
    case 'd': return op_collection(v, PTH_DICT);
    case 'l': case 0x91: return op_collection(v, PTH_LIST);         /* LIST, FROZENSET */
    case 't': return op_collection(v, PTH_TUPLE);
    case 0x85: return push_tuple_n(v, 1);
    case 0x86: return push_tuple_n(v, 2);
    case 0x87: return push_tuple_n(v, 3);
    case 's': return op_setitem(v);
    case 'u': return fill_from_mark(v, 1);                          /* SETITEMS */
    case 'a': return op_append(v);
    case 'e': case 0x90: return fill_from_mark(v, 0);               /* APPENDS, ADDITEMS */
    case 'c': {                                                     /* GLOBAL */
        char *mod = NULL, *name = NULL;
        if ((s = read_line(v, &mod)) || (s = read_line(v, &name)))
            return s;
        return push_global(v, mod, name);
    }
    case 0x93: return op_stack_global(v);
    case 'R': return op_reduce(v);
    case 'b': return (s = pop(v, &o)) ? s : top(v, &o);              /* BUILD: state not needed */
    case 0x81: return op_newobj(v, 0);
    case 0x92: return op_newobj(v, 1);
    case 'Q': return op_persid(v);                                  /* BINPERSID */
    case 0x94: return memo_put(v, v->memo_count);                   /* MEMOIZE */
    case 'q': return op_index(v, 1, 1);                             /* BINPUT */
    case 'r': return op_index(v, 4, 1);                             /* LONG_BINPUT */
    case 'h': return op_index(v, 1, 0);                             /* BINGET */
    case 'j': return op_index(v, 4, 0);                             /* LONG_BINGET */
    default:
        return vm_fail(v, "not an opcode torch.save writes");
    }
}

hadm_status pth_unpickle(const uint8_t *p, size_t n, pth_arena *arena, pth_obj **root, hadm_error *err)
{
    if (n > PTH_MAX_PICKLE)
        return hadm_fail(err, HADM_ERR_FORMAT, "pickle of %zu bytes exceeds the %u-byte limit", n,
                         (unsigned)PTH_MAX_PICKLE);
    vm v = {.p = p, .n = n, .arena = arena, .err = err};
    hadm_status s = HADM_OK;
    int stop = 0;
    while (!s && !stop) {
        if (v.pos >= v.n) {
            s = hadm_fail(err, HADM_ERR_FORMAT, "pickle truncated at byte %zu (no STOP opcode)", v.pos);
            break;
        }
        v.op_pos = v.pos;
        v.op = p[v.pos++];
        s = step(&v, &stop);
    }
    if (!s && (v.sp != 1 || v.nmarks))
        s = vm_fail(&v, "%zu values and %d marks left at STOP, expected one value", v.sp, v.nmarks);
    if (!s)
        *root = v.stack[0];
    free(v.stack);
    free(v.memo);
    return s;
}
