//! How an epoch is shown: one human line, or one JSON object (`--json`).

use crate::train::EpochReport;

/// `epoch  3/10  train loss 0.0912  acc 97.31%  test acc 97.12%  1.84 s  32,608 samples/s`
pub fn human_line(r: &EpochReport, verbose: bool) -> String {
    let width = r.epochs.to_string().len();
    let mut line = format!(
        "epoch {:>width$}/{}  train loss {:.4}  acc {:6.2}%",
        r.epoch,
        r.epochs,
        r.train_loss,
        100.0 * r.train_accuracy
    );
    if let Some(acc) = r.validation_accuracy {
        line += &format!("  validation acc {:6.2}%", 100.0 * acc);
    }
    if let Some(acc) = r.test_accuracy {
        line += &format!("  test acc {:6.2}%", 100.0 * acc);
    }
    line += &format!(
        "  {:.2} s  {} samples/s",
        r.seconds,
        thousands(r.samples_per_second.round() as u64)
    );
    if verbose {
        line += &format!("  lr {}", r.lr);
        if let (Some(d), Some(s), Some(b)) = (r.dispatches, r.submits, r.readbacks) {
            line += &format!("  dispatches {d}  submits {s}  readbacks {b}");
        }
    }
    line
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
