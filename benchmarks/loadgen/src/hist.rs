//! A log-linear latency histogram in the HDR style, recording nanoseconds.
//!
//! Values below 128 get a bucket each; above that every power of two is split
//! into 64 equal sub-buckets, so a reported percentile is within 1/128
//! (< 0.8 %) of a recorded value. Fixed size (a few thousand counters), no
//! allocation per record. `main` owns one and records every measured message.

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum_ns: u128,
    max_ns: u64,
}

fn index(v: u64) -> usize {
    if v < 2 * SUB as u64 {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    shift as usize * SUB + (v >> shift) as usize
}

/// The middle of bucket `i`: the value reported for everything in it.
fn value(i: usize) -> u64 {
    if i < 2 * SUB {
        return i as u64;
    }
    let shift = (i / SUB - 1) as u32;
    let low = ((i - shift as usize * SUB) as u64) << shift;
    low + ((1u64 << shift) - 1) / 2
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.sum_ns += u128::from(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    pub fn mean_ns(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        self.sum_ns as f64 / self.total as f64
    }

    /// The smallest recorded value (to bucket precision) with at least
    /// fraction `q` of all records at or below it; 0 when empty.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        let target = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return value(i).min(self.max_ns);
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for v in (0..1_000_000u64).chain([u64::MAX >> 1, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            let err = value(i).abs_diff(v) as f64;
            assert!(
                err <= 1.0 + v as f64 / 128.0,
                "v={v} i={i} value={}",
                value(i)
            );
        }
        assert_eq!(index(127) + 1, index(128));
        assert_eq!(index(255) + 1, index(256));
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v * 1000);
        }
        let p50 = h.quantile_ns(0.5) as f64;
        assert!((p50 - 500_000.0).abs() < 500_000.0 / 64.0, "{p50}");
        assert_eq!(h.quantile_ns(1.0), 1_000_000);
        assert_eq!(h.count(), 1000);
    }
}
