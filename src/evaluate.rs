//! From the logits of a labelled set to what `eval` and `train --confusion` show: loss,
//! accuracy, per-class accuracy and the confusion matrix; and from one example's logits to
//! class probabilities, for `predict`.
//!
//! The loss and the predicted class of each example come from [`crate::cpu::ops::output_loss`],
//! the op training uses, so they are the same numbers whichever device made the logits.

use crate::cpu::ops;
use crate::network::{NetworkSpec, Output};
use crate::report::thousands;
use serde::Serialize;
use std::fmt::Write;

/// One class's examples and how many were classified right.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassAccuracy {
    pub class: usize,
    pub examples: u64,
    pub correct: u64,
    /// null for a class with no examples.
    pub accuracy: Option<f64>,
}

/// A labelled set evaluated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub examples: u64,
    pub correct: u64,
    /// Fraction in [0, 1].
    pub accuracy: f64,
    /// Mean loss per example (the training loss's definition).
    pub loss: f64,
    pub per_class: Vec<ClassAccuracy>,
    /// `confusion[true][predicted]`: examples of class `true` classified as `predicted`.
    pub confusion: Vec<Vec<u64>>,
}

/// Each example's predicted class (the first largest logit): what `accuracy` counts.
pub fn predictions(logits: &[f32], classes: usize) -> Vec<usize> {
    logits.chunks_exact(classes).map(ops::argmax).collect()
}

/// Evaluates `logits` (examples × classes) against `labels`.
pub fn evaluate(spec: &NetworkSpec, logits: &[f32], labels: &[u8]) -> Evaluation {
    let classes = *spec.widths.last().expect("widths");
    assert_eq!(logits.len(), labels.len() * classes, "one row of logits per label");
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut loss_sum = 0.0f64;
    for (z, &label) in logits.chunks_exact(classes).zip(labels) {
        let label = label as usize;
        let (loss, predicted) = ops::output_loss(spec.output, spec.loss, z, label, 1.0, None);
        loss_sum += loss as f64;
        confusion[label][predicted] += 1;
    }
    let per_class: Vec<ClassAccuracy> = confusion
        .iter()
        .enumerate()
        .map(|(class, row)| {
            let examples: u64 = row.iter().sum();
            ClassAccuracy {
                class,
                examples,
                correct: row[class],
                accuracy: (examples > 0).then(|| row[class] as f64 / examples as f64),
            }
        })
        .collect();
    let examples = labels.len() as u64;
    let correct = per_class.iter().map(|c| c.correct).sum();
    Evaluation {
        examples,
        correct,
        accuracy: correct as f64 / examples.max(1) as f64,
        loss: loss_sum / examples.max(1) as f64,
        per_class,
        confusion,
    }
}

impl Evaluation {
    /// The text table: totals, per-class accuracy, and the confusion matrix.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let classes = self.confusion.len();
        let _ = writeln!(
            out,
            "loss {:.4}  accuracy {:.2}% ({} of {})",
            self.loss,
            100.0 * self.accuracy,
            thousands(self.correct),
            thousands(self.examples)
        );
        let width = thousands(self.examples).len().max(8);
        let _ = writeln!(out, "\nclass  {:>width$}  {:>width$}  accuracy", "examples", "correct");
        for c in &self.per_class {
            let accuracy = c.accuracy.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a));
            let _ = writeln!(
                out,
                "{:>5}  {:>width$}  {:>width$}  {:>8}",
                c.class,
                thousands(c.examples),
                thousands(c.correct),
                accuracy,
            );
        }
        let _ = writeln!(out, "\nconfusion matrix (rows: true class, columns: predicted class)");
        let cell = self
            .confusion
            .iter()
            .flatten()
            .map(|&n| n.to_string().len())
            .max()
            .unwrap_or(1)
            .max(classes.to_string().len());
        let mut header = format!("{:>5} ", "");
        for k in 0..classes {
            let _ = write!(header, " {k:>cell$}");
        }
        let _ = writeln!(out, "{header}");
        for (true_class, row) in self.confusion.iter().enumerate() {
            let mut line = format!("{true_class:>5} ");
            for n in row {
                let _ = write!(line, " {n:>cell$}");
            }
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

/// Class scores in [0, 1] from one example's logits: the softmax (they sum to 1), or for a
/// sigmoid output each class's own σ(z).
pub fn probabilities(output: Output, logits: &[f32]) -> Vec<f32> {
    match output {
        Output::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = logits.iter().map(|&z| (z - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|e| e / sum).collect()
        }
        Output::Sigmoid => logits.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect(),
    }
}

/// The `k` most probable classes, most probable first (the lower class first on ties).
pub fn top_k(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Activation, Loss};

    fn spec(classes: usize) -> NetworkSpec {
        NetworkSpec {
            widths: vec![2, classes],
            activation: Activation::Relu,
            output: Output::Softmax,
            loss: Loss::Ce,
        }
    }

    #[test]
    fn confusion_counts_true_rows_and_predicted_columns() {
        // Three classes; logits predict 0, 2, 2, 1.
        let logits = [5.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 1.0, 2.0, 0.0, 9.0, 0.0];
        let labels = [0, 1, 2, 1];
        let e = evaluate(&spec(3), &logits, &labels);
        assert_eq!(e.confusion, vec![vec![1, 0, 0], vec![0, 1, 1], vec![0, 0, 1]]);
        assert_eq!((e.correct, e.examples), (3, 4));
        assert_eq!(e.per_class[1].accuracy, Some(0.5));
        assert!((e.accuracy - 0.75).abs() < 1e-12);
        // Cross-entropy of the first example: log(e^5 + 2) - 5.
        let first = ((5.0f64).exp() + 2.0).ln() - 5.0;
        assert!(e.loss > first / 4.0);
        let table = e.table();
        assert!(table.contains("accuracy 75.00% (3 of 4)"), "{table}");
    }

    #[test]
    fn probabilities_sum_to_one_and_rank() {
        let p = probabilities(Output::Softmax, &[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let top = top_k(&p, 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    }
}
