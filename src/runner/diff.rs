//! A line diff of two versions of a runbook, for "the script changed" messages.

/// Changed lines with two lines of context, `-` for the old version and `+` for the new.
pub fn unified(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() * b.len() > 25_000_000 {
        return "  (the runbooks are too long to compare line by line)\n".into();
    }
    // Longest common subsequence table, from the end.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, old line number, new line number, text)
    let mut ops: Vec<(char, usize, usize, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i + 1, j + 1, a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // The old line before the new one that replaces it, as diff and git show them.
            ops.push(('-', i + 1, j, a[i]));
            i += 1;
        } else {
            ops.push(('+', i, j + 1, b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.0 != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut out = String::new();
    let mut last_shown: Option<usize> = None;
    for (k, (tag, ol, nl, text)) in ops.iter().enumerate() {
        let near = changed.iter().any(|&c| c.abs_diff(k) <= 2);
        if !near {
            continue;
        }
        if let Some(prev) = last_shown {
            if k > prev + 1 {
                out.push_str("   ...\n");
            }
        }
        let num = match tag {
            '-' => format!("{ol:>4} "),
            _ => format!("{nl:>4} "),
        };
        out.push_str(&format!("  {num}{tag} {text}\n"));
        last_shown = Some(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn changed_lines_show_old_then_new_with_two_lines_of_context() {
        let cases: &[(&str, &str, &str)] = &[
            ("a\nb\nc\n", "a\nb\nc\n", ""),
            (
                "a\nb\nc\n",
                "a\nB\nc\n",
                "     1   a\n     2 - b\n     2 + B\n     3   c\n",
            ),
            ("a\n", "a\nb\n", "     1   a\n     2 + b\n"),
            ("a\nb\n", "b\n", "     1 - a\n     1   b\n"),
            (
                "1\n2\n3\n4\n5\n6\n7\n8\n",
                "x\n2\n3\n4\n5\n6\n7\ny\n",
                "     1 - 1\n     1 + x\n     2   2\n     3   3\n   ...\n     6   6\n     7   7\n     8 - 8\n     8 + y\n",
            ),
        ];
        for (old, new, want) in cases {
            assert_eq!(unified(old, new), *want, "{old:?} → {new:?}");
        }
    }
}
