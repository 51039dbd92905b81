//! Rollout planning: canary first, then batches.

use std::str::FromStr;

/// How many servers a batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    /// A fixed number.
    Count(usize),
    /// A percentage of all selected servers (rounded up, at least one).
    Percent(u8),
}

impl Default for BatchSize {
    fn default() -> BatchSize {
        BatchSize::Count(1)
    }
}

impl FromStr for BatchSize {
    type Err = String;

    fn from_str(s: &str) -> Result<BatchSize, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            match p.trim().parse::<u8>() {
                Ok(n) if (1..=100).contains(&n) => Ok(BatchSize::Percent(n)),
                _ => Err(format!("{s:?}: a percentage must be 1% to 100%")),
            }
        } else {
            match s.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(BatchSize::Count(n)),
                _ => Err(format!("{s:?}: expected a number of servers (≥ 1) or a percentage such as 25%")),
            }
        }
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl BatchSize {
    /// The number of servers per batch for `total` servers.
    pub fn resolve(self, total: usize) -> usize {
        match self {
            BatchSize::Count(n) => n.max(1),
            BatchSize::Percent(p) => (total * p as usize).div_ceil(100).max(1),
        }
    }
}

/// Splits `nodes` (in order) into the canary batch and the batches after it.
pub fn batches(nodes: &[String], canary: usize, size: BatchSize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let canary = canary.min(nodes.len());
    if canary > 0 {
        out.push(nodes[..canary].to_vec());
    }
    let per = size.resolve(nodes.len());
    for chunk in nodes[canary..].chunks(per) {
        out.push(chunk.to_vec());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canary_then_batches() {
        let nodes: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let b = batches(&nodes, 1, BatchSize::Count(4));
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 4, 4, 1]);
        assert_eq!(b[0], vec!["n0"]);
        let b = batches(&nodes, 0, "25%".parse().unwrap());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
        assert_eq!(batches(&nodes[..2], 5, BatchSize::Count(1)).len(), 1);
        assert!(batches(&[], 1, BatchSize::Count(1)).is_empty());
        assert!("0".parse::<BatchSize>().is_err() && "101%".parse::<BatchSize>().is_err() && "x".parse::<BatchSize>().is_err());
    }
}
