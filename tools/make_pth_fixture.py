#!/usr/bin/env python3
"""Writes PyTorch checkpoints in the layout of the original HADM .pth files,
for the `hadm convert` tests. Developer tool: never needed at run time.

Two backends produce the same bytes:
  torch    Debian's python3-torch (1.13): `torch.save`, exactly as detectron2
           saved the real checkpoints (run with /usr/bin/python3).
  emulate  Python's standard library only: the same pickler, protocol and
           persistent ids torch.save uses, and a zip writer laid out like
           torch's (64-byte aligned records, data descriptors, ZIP64 end
           records). The tests use it to build checkpoints from the golden
           models at test time (they are too big to commit), and first check
           that it reproduces the committed torch-written fixture byte for byte.

Usage:
  make_pth_fixture.py small OUT.pth [--backend torch|emulate] [--zip64]
  make_pth_fixture.py from-safetensors MODEL.safetensors OUT.pth
        [--backend ...] [--no-ema] [--module-prefix] [--zip64]
        [--pad-gb N]   (a sparse never-read storage of N GiB before the
                        weights, so offsets pass 4 GiB as in the real files)
"""
import argparse
import collections
import io
import json
import struct
import sys
import types
import zlib

# ---------------------------------------------------------------- values
# Known values: every element is an exact small multiple of 1/8, so it is the
# same number in float16, bfloat16, float32 and float64.


def formula(seed, n):
    return [(((seed * 131 + j * 31) % 255) - 127) / 8.0 for j in range(n)]


def int_formula(seed, n):
    return [(seed * 1000003 + j * 7919) % 100000 - 50000 for j in range(n)]


# ---------------------------------------------------------------- backends
class TorchBackend:
    """Real tensors; storages marked 'cuda:0' get that location tag."""

    def __init__(self):
        import torch
        self.torch = torch
        self.cuda_ptrs = set()

        def tagger(storage):
            if storage.data_ptr() in self.cuda_ptrs:
                return 'cuda:' + str(0)   # a fresh string, as torch's _cuda_tag makes
            return None

        torch.serialization.register_package(1, tagger, lambda obj, loc: obj)
        self.dtypes = {'f32': torch.float32, 'f64': torch.float64, 'f16': torch.float16,
                       'bf16': torch.bfloat16, 'i64': torch.int64}

    def storage(self, dtype, values, location='cpu', raw=None):
        t = self.torch
        if raw is not None:
            base = t.frombuffer(bytearray(raw), dtype=t.float32) if raw else t.zeros(0)
        elif dtype == 'i64':
            base = t.tensor(values, dtype=t.int64)
        else:
            base = t.tensor(values, dtype=t.float64).to(self.dtypes[dtype])
        if location != 'cpu':
            self.cuda_ptrs.add(base.storage().data_ptr())
        return base

    def view(self, base, offset, shape, stride):
        return self.torch.as_strided(base, tuple(shape), tuple(stride), offset)

    def save(self, obj, path, zip64=False, pad_gb=0):
        if zip64 or pad_gb:
            sys.exit('--zip64/--pad-gb need --backend emulate (torch only writes ZIP64 '
                     'entries past 4 GiB)')
        with open(path, 'wb') as f:   # a file object, as fvcore saves: records under "archive/"
            self.torch.save(obj, f)


def _fake_torch():
    """Stand-ins registered as torch / torch._utils so the pickler writes the
    same GLOBAL opcodes torch does. Nothing is ever unpickled with them."""
    torch_mod = types.ModuleType('torch')
    utils_mod = types.ModuleType('torch._utils')

    def _rebuild_tensor_v2(*args):
        raise RuntimeError('emulated checkpoint: not loadable here')

    _rebuild_tensor_v2.__module__ = 'torch._utils'
    _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch_mod._utils = utils_mod
    for name in ('FloatStorage', 'DoubleStorage', 'HalfStorage', 'BFloat16Storage', 'LongStorage'):
        cls = type(name, (), {'__module__': 'torch'})
        setattr(torch_mod, name, cls)
    sys.modules.setdefault('torch', torch_mod)
    sys.modules.setdefault('torch._utils', utils_mod)
    return sys.modules['torch'], sys.modules['torch._utils']


class FakeStorage:
    def __init__(self, type_name, numel, data, location):
        self.type_name, self.numel, self.data, self.location = type_name, numel, data, location


class FakeTypedStorage:
    """What Tensor.__reduce_ex__ hands the pickler: a fresh wrapper per tensor."""

    def __init__(self, storage):
        self.storage = storage


class FakeTensor:
    def __init__(self, storage, offset, shape, stride, rebuild):
        self.s, self.offset, self.shape, self.stride, self.rebuild = storage, offset, shape, stride, rebuild

    def __reduce_ex__(self, proto):
        return (self.rebuild, (FakeTypedStorage(self.s), self.offset, tuple(self.shape),
                               tuple(self.stride), False, collections.OrderedDict()))


class EmulateBackend:
    TYPES = {'f32': ('FloatStorage', 'f', 4), 'f64': ('DoubleStorage', 'd', 8),
             'f16': ('HalfStorage', 'e', 2), 'i64': ('LongStorage', 'q', 8),
             'bf16': ('BFloat16Storage', None, 2)}

    def __init__(self):
        self.torch, self.utils = _fake_torch()

    def storage(self, dtype, values, location='cpu', raw=None):
        type_name, code, size = self.TYPES[dtype]
        if raw is not None:
            data, n = bytes(raw), len(raw) // size
        elif dtype == 'bf16':
            data = b''.join(struct.pack('<f', v)[2:] for v in values)
            n = len(values)
        else:
            data, n = struct.pack('<%d%s' % (len(values), code), *values), len(values)
        return FakeStorage(type_name, n, data, location)

    def view(self, storage, offset, shape, stride):
        return FakeTensor(storage, offset, shape, stride, self.utils._rebuild_tensor_v2)

    def save(self, obj, path, zip64=False, pad_gb=0):
        storages, id_map = {}, {}

        def persistent_id(o):
            if not isinstance(o, FakeTypedStorage):
                return None
            s = o.storage
            key = id_map.setdefault(id(s), str(len(id_map)))
            storages[key] = s
            loc = 'cpu' if s.location == 'cpu' else 'cuda:' + str(0)
            return ('storage', getattr(self.torch, s.type_name), key, loc, s.numel)

        buf = io.BytesIO()
        p = __import__('pickle').Pickler(buf, protocol=2)
        p.persistent_id = persistent_id
        p.dump(obj)
        records = [('data.pkl', buf.getvalue())]
        for key in sorted(storages):
            records.append(('data/' + key, storages[key].data))
        records.append(('version', b'3\n'))
        write_torch_zip(path, 'archive', records, zip64, pad_gb)


# ---------------------------------------------------------------- zip
class _Sparse:
    """A record of n zero bytes written as a hole (the --pad-gb storage)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


def _crc(data):
    if not isinstance(data, _Sparse):
        return zlib.crc32(data)
    crc, chunk, left = 0, bytes(1 << 24), data.n
    while left:
        k = min(left, len(chunk))
        crc = zlib.crc32(chunk[:k] if k < len(chunk) else chunk, crc)
        left -= k
    return crc


def write_torch_zip(path, archive, records, force_zip64=False, pad_gb=0):
    """The byte layout of torch 1.13's PyTorchStreamWriter (miniz)."""
    if pad_gb:
        records = records[:1] + [('data/pad', _Sparse(pad_gb << 30))] + records[1:]
    big = 0xFFFFFFFF
    central = []
    with open(path, 'wb') as f:
        for name, data in records:
            full = (archive + '/' + name).encode()
            pos, size = f.tell(), len(data)
            z64 = b''
            if size >= big or pos >= big:
                z64 = struct.pack('<HH', 1, (16 if size >= big else 0) + (8 if pos >= big else 0))
                if size >= big:
                    z64 += struct.pack('<QQ', size, size)
                if pos >= big:
                    z64 += struct.pack('<Q', pos)
            start = pos + 30 + len(full) + 4 + len(z64)
            pad = (64 - start % 64) % 64
            extra = z64 + b'FB' + struct.pack('<H', pad) + b'Z' * pad
            flags = 0x0808 if size else 0x0800     # miniz writes no descriptor for empty records
            f.write(struct.pack('<IHHHHHIIIHH', 0x04034b50, 0, flags, 0, 0, 0, 0, 0, 0,
                                len(full), len(extra)) + full + extra)
            if isinstance(data, _Sparse):
                f.seek(data.n, 1)
            else:
                f.write(data)
            crc = _crc(data)
            if not size:
                pass
            elif size >= big or pos >= big:
                f.write(struct.pack('<IIQQ', 0x08074b50, crc, size, size))
            else:
                f.write(struct.pack('<IIII', 0x08074b50, crc, size, size))
            central.append((full, pos, size, crc, flags))
        cd_start = f.tell()
        for full, pos, size, crc, flags in central:
            wide = force_zip64 or size >= big or pos >= big
            z64 = b''
            if wide:
                fields = b''
                if force_zip64 or size >= big:
                    fields += struct.pack('<QQ', size, size)
                if force_zip64 or pos >= big:
                    fields += struct.pack('<Q', pos)
                z64 = struct.pack('<HH', 1, len(fields)) + fields
            hs = big if (force_zip64 or size >= big) else size
            hp = big if (force_zip64 or pos >= big) else pos
            version = 0x2d if wide else 0
            f.write(struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, version, version, flags, 0, 0, 0,
                                crc, hs, hs, len(full), len(z64), 0, 0, 0, 0, hp) + full + z64)
        cd_end = f.tell()
        n, cd_size = len(central), cd_end - cd_start
        f.write(struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 0x031e, 0x2d, 0, 0, n, n, cd_size, cd_start))
        f.write(struct.pack('<IIQI', 0x07064b50, 0, cd_end, 1))
        f.write(struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                            min(cd_size, big), min(cd_start, big), 0))


# ---------------------------------------------------------------- contents
class NoteForHumans:
    """An arbitrary object in the trainer state: pickled with NEWOBJ + BUILD,
    which the converter must step over without understanding it."""

    def __init__(self):
        self.text = 'not needed by hadm'
        self.count = 3


NoteForHumans.__module__ = 'hadm_fixture'
sys.modules.setdefault('hadm_fixture', types.ModuleType('hadm_fixture')).NoteForHumans = NoteForHumans


def contiguous_stride(shape):
    stride, acc = [], 1
    for d in reversed(shape):
        stride.insert(0, acc)
        acc *= d
    return stride


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def small_checkpoint(B):
    """The committed fixture. tests/test_convert.c knows the same table."""
    def t(seed, shape, dtype='f32', location='cpu'):
        s = B.storage(dtype, formula(seed, numel(shape)) if dtype != 'i64' else int_formula(seed, numel(shape)),
                      location)
        return B.view(s, 0, shape, contiguous_stride(shape))

    model = collections.OrderedDict()
    model['backbone.w'] = t(1, [4, 3])
    model['backbone.b'] = t(2, [4])
    model['head.w'] = t(3, [2, 2, 3, 3])
    model._metadata = collections.OrderedDict([('', {'version': 1}), ('backbone', {'version': 1})])

    ema = {}
    ema['backbone.w'] = t(11, [4, 3], location='cuda:0')
    ema['backbone.b'] = t(12, [4], location='cuda:0')
    ema['head.w'] = t(13, [2, 2, 3, 3], location='cuda:0')
    ema['half'] = t(14, [5], 'f16')
    ema['bf16'] = t(15, [2, 3], 'bf16')
    ema['double'] = t(16, [3, 2], 'f64')
    ema['long'] = t(17, [4], 'i64')
    ema['scalar'] = t(18, [])
    ema['empty'] = t(19, [0, 3])
    shared = B.storage('f32', formula(20, 40), 'cuda:0')
    ema['shared.a'] = B.view(shared, 0, [2, 5], [5, 1])
    ema['shared.b'] = B.view(shared, 10, [3, 4], [1, 3])       # a transposed view
    ema['pixel_mean'] = B.view(B.storage('f32', [123.5, 116.25, 103.5]), 0, [3, 1, 1], [1, 1, 1])

    exp_avg = {i: t(30 + i, [4, 3] if i == 0 else [4]) for i in range(2)}
    optimizer = {
        'state': {i: {'step': t(40 + i, []), 'exp_avg': exp_avg[i], 'exp_avg_sq': t(50 + i, [4, 3] if i == 0 else [4])}
                  for i in range(2)},
        'param_groups': [{'lr': 0.0001, 'betas': (0.9, 0.999), 'eps': 1e-08, 'weight_decay': 0.1,
                          'amsgrad': False, 'maximize': False, 'foreach': None, 'capturable': False,
                          'params': [0, 1, 2]}],
    }
    trainer = {
        'iteration': 249999,
        'optimizer': optimizer,
        'grad_scaler': {'scale': 65536.0, 'growth_factor': 2.0, 'backoff_factor': 0.5,
                        'growth_interval': 2000, '_growth_tracker': 1234},
        'hooks': {'detectron2.engine.hooks.LRScheduler': {'base_lrs': [0.0001], 'last_epoch': 249999,
                                                           'milestones': collections.Counter({210000: 1, 240000: 1})}},
        'note': NoteForHumans(),
        'big': [2 ** 40, -2 ** 63, 255, 65535, -1, 1 << 70],
        'many': {('k%04d' % i): i for i in range(1100)},
        'flags': (True, False, None, 1.5, b'raw bytes'),
    }
    return {'model': model, 'trainer': trainer, 'ema_state': ema, 'iteration': 249999}


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    header.pop('__metadata__', None)
    out = []
    for name, e in header.items():
        if e['dtype'] != 'F32':
            sys.exit('%s: %s is %s, expected F32' % (path, name, e['dtype']))
        b, end = e['data_offsets']
        out.append((name, e['shape'], body[b:end]))
    return out


def golden_checkpoint(B, path, no_ema, module_prefix):
    """ema_state: the golden model's tensors (plus the EMA's copies of the
    non-persistent buffers); model: the same names, other values."""
    ema, model = {}, collections.OrderedDict()
    prefix = 'module.' if module_prefix else ''
    for i, (name, shape, raw) in enumerate(read_safetensors(path)):
        loc = 'cuda:0' if i % 2 == 0 else 'cpu'
        ema[name] = B.view(B.storage('f32', None, loc, raw=raw), 0, shape, contiguous_stride(shape))
        flipped = bytes(b ^ 0x80 if k % 4 == 3 else b for k, b in enumerate(raw))   # negated
        model[prefix + name] = B.view(B.storage('f32', None, loc, raw=flipped), 0, shape, contiguous_stride(shape))
    model._metadata = collections.OrderedDict([('', {'version': 1})])
    ema['pixel_mean'] = B.view(B.storage('f32', [123.675, 116.28, 103.53]), 0, [3, 1, 1], [1, 1, 1])
    ema['pixel_std'] = B.view(B.storage('f32', [58.395, 57.12, 57.375]), 0, [3, 1, 1], [1, 1, 1])
    first = next(iter(ema.values()))
    optimizer = {'state': {0: {'step': B.view(B.storage('f32', [249999.0]), 0, [], []),
                               'exp_avg': first, 'exp_avg_sq': first}},
                 'param_groups': [{'lr': 0.0001, 'params': list(range(len(model)))}]}
    ckpt = {'model': model, 'trainer': {'iteration': 249999, 'optimizer': optimizer}, 'iteration': 249999}
    if not no_ema:
        ckpt['ema_state'] = ema
    return ckpt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('what', choices=['small', 'from-safetensors'])
    ap.add_argument('paths', nargs='+')
    ap.add_argument('--backend', choices=['torch', 'emulate'], default='torch')
    ap.add_argument('--no-ema', action='store_true')
    ap.add_argument('--module-prefix', action='store_true')
    ap.add_argument('--zip64', action='store_true', help='ZIP64 fields in every central entry')
    ap.add_argument('--pad-gb', type=int, default=0)
    a = ap.parse_args()
    B = TorchBackend() if a.backend == 'torch' else EmulateBackend()
    if a.what == 'small':
        B.save(small_checkpoint(B), a.paths[0], a.zip64, a.pad_gb)
    else:
        if len(a.paths) != 2:
            ap.error('from-safetensors needs MODEL.safetensors OUT.pth')
        B.save(golden_checkpoint(B, a.paths[0], a.no_ema, a.module_prefix), a.paths[1], a.zip64, a.pad_gb)


if __name__ == '__main__':
    main()
