//! Static and symbolic dimensions, broadcasting and shape display.
//!
//! A symbolic dimension (`batch`) stands for one value, bound from the inputs at call
//! time. Broadcasting follows NumPy with one compile-time rule: only a *static* 1
//! stretches. A symbolic dimension never broadcasts, even if it is 1 at run time, so
//! that every broadcast (and therefore every gradient reduction) is decided at compile
//! time. Two different symbolic names never unify: `[n, 3] + [m, 3]` is an error that
//! asks the user to use one name.

use std::fmt;

/// One dimension.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// Known at compile time.
    Static(usize),
    /// Bound from the inputs at call time.
    Sym(String),
}

impl Dim {
    /// The static size, if known.
    pub fn as_static(&self) -> Option<usize> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Sym(s) => write!(f, "{s}"),
        }
    }
}

/// A shape: a list of dimensions; `[]` is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// The scalar shape `[]`.
    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    /// A shape of static dimensions.
    pub fn of(dims: &[usize]) -> Self {
        Shape(dims.iter().map(|&d| Dim::Static(d)).collect())
    }

    /// The number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// Whether this is the scalar shape.
    pub fn is_scalar(&self) -> bool {
        self.0.is_empty()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The number of elements if every dimension is static.
    pub fn static_len(&self) -> Option<usize> {
        self.0.iter().map(Dim::as_static).product()
    }

    /// The product of the dimensions as (static factor, symbolic factors).
    pub fn len_factors(&self) -> (usize, Vec<String>) {
        let mut n = 1;
        let mut syms = Vec::new();
        for d in &self.0 {
            match d {
                Dim::Static(k) => n *= k,
                Dim::Sym(s) => syms.push(s.clone()),
            }
        }
        (n, syms)
    }

    /// The shape with `axis` removed.
    pub fn without_axis(&self, axis: usize) -> Shape {
        let mut dims = self.0.clone();
        dims.remove(axis);
        Shape(dims)
    }

    /// The shape with `axis` set to a static 1.
    pub fn with_unit_axis(&self, axis: usize) -> Shape {
        let mut dims = self.0.clone();
        dims[axis] = Dim::Static(1);
        Shape(dims)
    }

    /// The symbolic dimension names, in order of first appearance.
    pub fn symbols(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in &self.0 {
            if let Dim::Sym(s) = d {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// NumPy broadcasting of two shapes; `Err` says which dimensions clash.
pub fn broadcast(a: &Shape, b: &Shape) -> Result<Shape, String> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map(|k| &a.0[k]);
        let db = (i + b.rank()).checked_sub(rank).map(|k| &b.0[k]);
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(Dim::Static(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Static(1))) => x.clone(),
            (Some(x), Some(y)) => {
                let hint = match (x, y) {
                    (Dim::Sym(_), Dim::Sym(_)) => {
                        "; symbolic dimensions with different names never match, so use one name"
                    }
                    (Dim::Sym(_), _) | (_, Dim::Sym(_)) => "; a symbolic dimension matches only itself or a static 1",
                    _ => "",
                };
                return Err(format!("dimension {x} does not match dimension {y}{hint}"));
            }
            (None, None) => unreachable!("i < rank"),
        };
        out.push(d);
    }
    Ok(Shape(out))
}

/// Whether `from` broadcasts to exactly `to` (NumPy rules, static 1 stretches).
pub fn broadcasts_to(from: &Shape, to: &Shape) -> bool {
    from.rank() <= to.rank() && broadcast(from, to).as_ref() == Ok(to)
}

/// Normalizes a possibly negative axis for a given rank.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    #[test]
    fn broadcasting_follows_numpy_with_static_ones() {
        let a = Shape(vec![sym("batch"), Dim::Static(10)]);
        let b = Shape::of(&[10]);
        assert_eq!(broadcast(&a, &b).unwrap(), a);
        assert_eq!(broadcast(&Shape::of(&[3, 1]), &Shape::of(&[1, 4])).unwrap(), Shape::of(&[3, 4]));
        assert_eq!(broadcast(&Shape::scalar(), &a).unwrap(), a);
        assert!(broadcast(&Shape::of(&[3]), &Shape::of(&[4])).is_err());
        let err = broadcast(&Shape(vec![sym("n")]), &Shape(vec![sym("m")])).unwrap_err();
        assert!(err.contains("use one name"), "{err}");
        assert!(broadcast(&Shape(vec![sym("n")]), &Shape::of(&[3])).is_err());
        assert_eq!(broadcast(&Shape(vec![sym("n")]), &Shape::of(&[1])).unwrap(), Shape(vec![sym("n")]));
    }

    #[test]
    fn axes_normalize() {
        assert_eq!(normalize_axis(-1, 2), Some(1));
        assert_eq!(normalize_axis(1, 2), Some(1));
        assert_eq!(normalize_axis(2, 2), None);
        assert_eq!(normalize_axis(-3, 2), None);
    }

    #[test]
    fn displays_like_the_source() {
        assert_eq!(Shape(vec![sym("batch"), Dim::Static(784)]).to_string(), "[batch, 784]");
    }
}
