//! A reader of exactly the pickles CIFAR's python version is made of, and nothing else.
//!
//! The files (`data_batch_1`…, `test_batch`, `batches.meta`; CIFAR-100's `train`, `test`,
//! `meta`) are Python 2 `cPickle` dumps at protocol 2: a dict with byte-string keys whose
//! `data` is a numpy `uint8` array pickled through `numpy.core.multiarray._reconstruct`
//! (`_reconstruct(ndarray, (0,), b'b')`, then `BUILD` with `(1, shape, dtype('u1', 0, 1),
//! False, raw bytes)`), and whose labels and names are lists of small ints and byte strings.
//!
//! A pickle is a program: it may name any Python callable. This reader runs none. It knows the
//! opcodes those files use and three globals (`_reconstruct`, `numpy.ndarray`,
//! `numpy.dtype`), each only with the arguments numpy writes for a `uint8` array; anything
//! else is an error naming the opcode or global. Nothing is allocated from a length the file
//! states before the bytes it describes are there; an array's shape must account for its
//! bytes exactly; containers nest at most `MAX_DEPTH` deep; references (`BINGET`) reach only
//! values that can no longer change.

use std::rc::Rc;

/// The deepest nesting of lists, tuples and dicts accepted (CIFAR's is 3).
pub const MAX_DEPTH: u8 = 8;

/// A value of a CIFAR pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    /// A Python 2 `str` (a byte string).
    Bytes(Rc<[u8]>),
    /// A `unicode` string.
    Str(Rc<str>),
    List(Vec<Py>, u8),
    Tuple(Vec<Py>, u8),
    Dict(Vec<(Py, Py)>, u8),
    Global(Global),
    /// numpy's `uint8` dtype (`built` once its state was set).
    DType {
        built: bool,
    },
    /// A numpy `uint8` array (None until its state was set).
    Array(Option<Array>),
}

/// The callables a CIFAR pickle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    Reconstruct,
    NdArray,
    DType,
}

/// A `uint8` array: its shape and its bytes in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Rc<[u8]>,
}

impl Py {
    fn depth(&self) -> u8 {
        match self {
            Py::List(_, d) | Py::Tuple(_, d) | Py::Dict(_, d) => *d,
            _ => 0,
        }
    }

    /// Whether a reference to it could see it change later (a container or an array before
    /// its state is set).
    fn mutable(&self) -> bool {
        matches!(self, Py::List(..) | Py::Dict(..) | Py::Array(None) | Py::DType { built: false })
    }

    /// The value of `key` (a byte or unicode string) in a dict.
    pub fn get(&self, key: &str) -> Option<&Py> {
        let Py::Dict(items, _) = self else { return None };
        items.iter().find(|(k, _)| k.as_text().as_deref() == Some(key)).map(|(_, v)| v)
    }

    /// A string's text (byte strings as Latin-1, as torchvision reads them).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Py::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            Py::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Py::None => "None",
            Py::Bool(_) => "a bool",
            Py::Int(_) => "an int",
            Py::Bytes(_) => "a byte string",
            Py::Str(_) => "a string",
            Py::List(..) => "a list",
            Py::Tuple(..) => "a tuple",
            Py::Dict(..) => "a dict",
            Py::Global(_) => "a callable",
            Py::DType { .. } => "a dtype",
            Py::Array(_) => "an array",
        }
    }
}

/// Why a pickle was refused.
pub type PickleError = String;

fn nested(items: &[Py]) -> Result<u8, PickleError> {
    let d = items.iter().map(Py::depth).max().unwrap_or(0) + 1;
    if d > MAX_DEPTH {
        return Err(format!("containers nested deeper than {MAX_DEPTH}"));
    }
    Ok(d)
}

/// Reads one pickle: the value its `STOP` returns.
pub fn read(bytes: &[u8]) -> Result<Py, PickleError> {
    Machine { bytes, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: Vec::new() }.run()
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    stack: Vec<Py>,
    marks: Vec<usize>,
    /// Memoised values; None where the value could still change (refused by `BINGET`).
    memo: Vec<Option<Py>>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let at = self.pos;
        if self.bytes.len() - at < n {
            return Err(format!("truncated at byte {at}: {n} bytes announced, {} left", self.bytes.len() - at));
        }
        self.pos += n;
        Ok(&self.bytes[at..at + n])
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `\n`-terminated name of a `GLOBAL` (at most 64 bytes).
    fn line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.bytes[self.pos..];
        let Some(end) = rest.iter().take(65).position(|&c| c == b'\n') else {
            return Err(format!("a global's name at byte {} is not a short line", self.pos));
        };
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn pop(&mut self) -> Result<Py, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(format!("byte {}: an opcode takes a value from an empty stack", self.pos));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&mut self) -> Result<&mut Py, PickleError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| format!("byte {pos}: an opcode needs a value on an empty stack"))
    }

    /// The values since the last `MARK`.
    fn since_mark(&mut self) -> Result<Vec<Py>, PickleError> {
        let Some(m) = self.marks.pop() else {
            return Err(format!("byte {}: no MARK to collect values from", self.pos));
        };
        Ok(self.stack.split_off(m))
    }

    fn push_str(&mut self, b: &[u8]) {
        self.stack.push(Py::Bytes(Rc::from(b)));
    }

    fn run(mut self) -> Result<Py, PickleError> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let v = self.u8()?;
                    if v > 2 {
                        return Err(format!("protocol {v}: CIFAR's pickles are protocol 2"));
                    }
                }
                b'.' => {
                    // STOP
                    if !self.marks.is_empty() || self.stack.len() != 1 {
                        return Err(format!("STOP at byte {at} with {} values left", self.stack.len()));
                    }
                    return Ok(self.stack.pop().expect("checked"));
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Py::Dict(Vec::new(), 1)),
                b']' => self.stack.push(Py::List(Vec::new(), 1)),
                b')' => self.stack.push(Py::Tuple(Vec::new(), 1)),
                b't' => {
                    let items = self.since_mark()?;
                    let d = nested(&items)?;
                    self.stack.push(Py::Tuple(items, d));
                }
                0x85..=0x87 => {
                    // TUPLE1..TUPLE3
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let d = nested(&items)?;
                    self.stack.push(Py::Tuple(items, d));
                }
                b'a' | b'e' => {
                    // APPEND, APPENDS
                    let items = if op == b'a' { vec![self.pop()?] } else { self.since_mark()? };
                    let Py::List(list, d) = self.top()? else {
                        return Err(format!("byte {at}: APPEND to something that is not a list"));
                    };
                    *d = (*d).max(nested(&items)?);
                    list.extend(items);
                }
                b's' | b'u' => {
                    // SETITEM, SETITEMS
                    let items = if op == b's' {
                        let v = self.pop()?;
                        vec![self.pop()?, v]
                    } else {
                        self.since_mark()?
                    };
                    if items.len() % 2 != 0 {
                        return Err(format!("byte {at}: SETITEMS with an odd number of values"));
                    }
                    let depth = nested(&items)?;
                    let Py::Dict(dict, d) = self.top()? else {
                        return Err(format!("byte {at}: SETITEM on something that is not a dict"));
                    };
                    *d = (*d).max(depth);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.push((k, v));
                    }
                }
                b'N' => self.stack.push(Py::None),
                0x88 => self.stack.push(Py::Bool(true)),
                0x89 => self.stack.push(Py::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Py::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Py::Int(v.into()));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Py::Int(v.into()));
                }
                0x8a => {
                    // LONG1: a little-endian two's complement of n ≤ 8 bytes
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err(format!("byte {at}: an integer of {n} bytes"));
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &c) in b.iter().enumerate() {
                        v |= i64::from(c) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Py::Int(v));
                }
                b'U' => {
                    let n = usize::from(self.u8()?);
                    let b = self.take(n)?;
                    self.push_str(b);
                }
                b'T' => {
                    let n = self.u32()?;
                    if n > i32::MAX as u32 {
                        return Err(format!("byte {at}: a string of negative length"));
                    }
                    let b = self.take(n as usize)?;
                    self.push_str(b);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let s =
                        std::str::from_utf8(b).map_err(|_| format!("byte {at}: a unicode string that is not UTF-8"))?;
                    self.stack.push(Py::Str(Rc::from(s)));
                }
                b'q' | b'r' => {
                    // BINPUT, LONG_BINPUT
                    let i = if op == b'q' { usize::from(self.u8()?) } else { self.u32()? as usize };
                    if i > self.memo.len() + 16 {
                        return Err(format!("byte {at}: memo slot {i}"));
                    }
                    let v = self.top()?;
                    let v = if v.mutable() { None } else { Some(v.clone()) };
                    if self.memo.len() <= i {
                        self.memo.resize(i + 1, None);
                    }
                    self.memo[i] = v;
                }
                b'h' | b'j' => {
                    // BINGET, LONG_BINGET
                    let i = if op == b'h' { usize::from(self.u8()?) } else { self.u32()? as usize };
                    match self.memo.get(i) {
                        Some(Some(v)) => {
                            let v = v.clone();
                            self.stack.push(v);
                        }
                        _ => {
                            return Err(format!(
                                "byte {at}: a reference to memo slot {i}, empty or holding a value that can change"
                            ))
                        }
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = match (module, name) {
                        (b"numpy.core.multiarray" | b"numpy._core.multiarray", b"_reconstruct") => Global::Reconstruct,
                        (b"numpy", b"ndarray") => Global::NdArray,
                        (b"numpy", b"dtype") => Global::DType,
                        _ => {
                            return Err(format!(
                                "the pickle names `{}.{}`, which CIFAR's files never do",
                                String::from_utf8_lossy(module),
                                String::from_utf8_lossy(name)
                            ))
                        }
                    };
                    self.stack.push(Py::Global(g));
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = reduce(&f, &args).map_err(|e| format!("byte {at}: {e}"))?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.top()?;
                    build(obj, state).map_err(|e| format!("byte {at}: {e}"))?;
                }
                _ => return Err(format!("opcode 0x{op:02x} at byte {at} is not one CIFAR's pickles use")),
            }
        }
    }
}

fn text_is(v: &Py, want: &str) -> bool {
    v.as_text().as_deref() == Some(want)
}

fn int_is(v: &Py, want: i64) -> bool {
    match v {
        Py::Int(i) => *i == want,
        Py::Bool(b) => i64::from(*b) == want,
        _ => false,
    }
}

/// A call: `_reconstruct(ndarray, (0,), b'b')` or `dtype('u1', 0, 1)`.
fn reduce(f: &Py, args: &Py) -> Result<Py, String> {
    let Py::Tuple(a, _) = args else { return Err(format!("a call with {} for its arguments", args.kind())) };
    match f {
        Py::Global(Global::Reconstruct) => {
            let ok = a.len() == 3
                && a[0] == Py::Global(Global::NdArray)
                && matches!(&a[1], Py::Tuple(t, _) if t.len() == 1 && int_is(&t[0], 0))
                && text_is(&a[2], "b");
            if !ok {
                return Err("_reconstruct with other arguments than numpy writes for an array".into());
            }
            Ok(Py::Array(None))
        }
        Py::Global(Global::DType) => {
            if a.len() != 3 || !int_is(&a[1], 0) || !int_is(&a[2], 1) {
                return Err("numpy.dtype with other arguments than numpy writes".into());
            }
            match a[0].as_text().as_deref() {
                Some("u1") => Ok(Py::DType { built: false }),
                Some(other) => Err(format!("an array of dtype `{other}`: CIFAR's pixels are uint8 (`u1`)")),
                None => Err("numpy.dtype of something that is not a type code".into()),
            }
        }
        other => Err(format!("a call of {}, not of one of numpy's array constructors", other.kind())),
    }
}

/// `BUILD`: the state of a dtype or an array.
fn build(obj: &mut Py, state: Py) -> Result<(), String> {
    let Py::Tuple(s, _) = state else { return Err(format!("an object's state is {}", state.kind())) };
    match obj {
        Py::DType { built } if !*built => {
            // (3, '|', None, None, None, -1, -1, 0): version 3, no byte order (one byte).
            if s.len() != 8 || !int_is(&s[0], 3) || !text_is(&s[1], "|") {
                return Err("a uint8 dtype's state is not numpy's".into());
            }
            *built = true;
            Ok(())
        }
        Py::Array(a @ None) => {
            if s.len() != 5 || !int_is(&s[0], 1) {
                return Err("an array's state is not numpy's (1, shape, dtype, fortran, data)".into());
            }
            let Py::Tuple(dims, _) = &s[1] else { return Err("an array's shape is not a tuple".into()) };
            let mut shape = Vec::with_capacity(dims.len());
            let mut count: usize = 1;
            for d in dims {
                let Py::Int(n) = d else { return Err("an array's shape holds something other than ints".into()) };
                let n = usize::try_from(*n).map_err(|_| format!("an array dimension of {n}"))?;
                count = count.checked_mul(n).ok_or("an array's shape overflows")?;
                shape.push(n);
            }
            if s[2] != (Py::DType { built: true }) {
                return Err(format!("an array of {}, not of a uint8 dtype", s[2].kind()));
            }
            if !int_is(&s[3], 0) {
                return Err("a Fortran-ordered array".into());
            }
            let Py::Bytes(data) = &s[4] else { return Err(format!("an array's data is {}", s[4].kind())) };
            if data.len() != count {
                return Err(format!("an array of shape {shape:?} needs {count} bytes, its data has {}", data.len()));
            }
            *a = Some(Array { shape, data: data.clone() });
            Ok(())
        }
        other => Err(format!("the state of {}", other.kind())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CIFAR-10 batch as Python 2's cPickle writes it (protocol 2), with `n` images.
    pub fn batch(n: usize, labels_key: &str) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'}', b'q', 1, b'('];
        let s = |p: &mut Vec<u8>, t: &str| {
            p.push(b'U');
            p.push(t.len() as u8);
            p.extend(t.as_bytes());
        };
        s(&mut p, "data");
        p.extend(
            b"q\x02cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00\x85U\x01b\x87Rq\x05(K\x01",
        );
        p.push(b'M');
        p.extend((n as u16).to_le_bytes());
        p.extend(b"M\x00\x0c\x86cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T");
        p.extend(((n * 3072) as u32).to_le_bytes());
        p.extend((0..n * 3072).map(|i| (i % 251) as u8));
        p.extend(b"tb");
        s(&mut p, labels_key);
        p.extend(b"]q\x08(");
        for i in 0..n {
            p.extend([b'K', (i % 10) as u8]);
        }
        p.extend(b"eu.");
        p
    }

    #[test]
    fn reads_a_cifar_batch() {
        let v = read(&batch(3, "labels")).unwrap();
        let Some(Py::Array(Some(a))) = v.get("data") else { panic!("{v:?}") };
        assert_eq!(a.shape, vec![3, 3072]);
        assert_eq!(a.data[3072 + 5], ((3072 + 5) % 251) as u8);
        let Some(Py::List(l, _)) = v.get("labels") else { panic!() };
        assert_eq!(l, &vec![Py::Int(0), Py::Int(1), Py::Int(2)]);
    }

    #[test]
    fn refuses_what_cifar_never_holds() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\x80\x02cos\nsystem\nU\x02lsR.".to_vec(), "os.system"),
            (b"\x80\x04K\x01.".to_vec(), "protocol 4"),
            (b"\x80\x02T\xff\xff\xff\x7f".to_vec(), "truncated"),
            (b"\x80\x02T\xff\xff\xff\xff".to_vec(), "negative"),
            (b"\x80\x02K\x01K\x02.".to_vec(), "2 values left"),
            (b"\x80\x02]q\x01h\x01.".to_vec(), "can change"),
            (b"\x80\x02d.".to_vec(), "opcode 0x64"),
            (b"\x80\x02cnumpy\ndtype\nU\x02f8K\x00K\x01\x87R.".to_vec(), "dtype `f8`"),
        ];
        for (bytes, want) in cases {
            let e = read(&bytes).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
        // A shape that disagrees with the bytes.
        let mut b = batch(2, "labels");
        let at = b.windows(3).position(|w| w == b"M\x02\x00").unwrap();
        b[at + 1] = 3;
        assert!(read(&b).unwrap_err().contains("needs 9216 bytes"));
        // Deep nesting.
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(std::iter::repeat_n(b']', 20));
        deep.extend(std::iter::repeat_n(b'a', 19));
        deep.push(b'.');
        assert!(read(&deep).unwrap_err().contains("nested deeper"));
    }
}
