//! ImageNet-1k class names, compiled into the library; class lookup by
//! index or label (the command's `--class`, the Python package's `target=`).

use std::sync::OnceLock;

const SYNSET: &str = include_str!("../models/imagenet_synset.txt");

/// The 1000 ImageNet class names in model output order ("tabby, tabby cat").
pub fn imagenet() -> &'static [String] {
    static LABELS: OnceLock<Vec<String>> = OnceLock::new();
    LABELS.get_or_init(|| {
        SYNSET
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.split_once(' ')
                    .map_or(l, |(_, names)| names)
                    .trim()
                    .to_string()
            })
            .collect()
    })
}

/// Labels for a model with `classes` outputs: ImageNet's for 1000 classes,
/// `class N` otherwise.
pub fn for_classes(classes: usize) -> Vec<String> {
    if classes == imagenet().len() {
        imagenet().to_vec()
    } else {
        (0..classes).map(|i| format!("class {i}")).collect()
    }
}

/// Finds a class by 0-based index or by a case-insensitive label substring.
///
/// A query matching one of the comma-separated names exactly wins; otherwise
/// the substring must match exactly one label.
pub fn find_class(labels: &[String], query: &str) -> Result<usize, String> {
    let q = query.trim();
    if let Ok(i) = q.parse::<usize>() {
        return if i < labels.len() {
            Ok(i)
        } else {
            Err(format!(
                "class {i} out of range: the model has {} classes (0..{})",
                labels.len(),
                labels.len() - 1
            ))
        };
    }
    let ql = q.to_lowercase();
    if ql.is_empty() {
        return Err("empty class name".into());
    }
    let exact: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].split(',').any(|n| n.trim().to_lowercase() == ql))
        .collect();
    if exact.len() == 1 {
        return Ok(exact[0]);
    }
    let hits: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i].to_lowercase().contains(&ql))
        .collect();
    match hits.len() {
        0 => Err(format!("no class label contains '{q}'")),
        1 => Ok(hits[0]),
        n => Err(format!(
            "'{q}' matches {n} classes: {}{}",
            hits.iter()
                .take(5)
                .map(|&i| format!("{i} ({})", labels[i]))
                .collect::<Vec<_>>()
                .join(", "),
            if n > 5 { ", ..." } else { "" }
        )),
    }
}

/// When `query` names a class by one of its names exactly (which wins) but
/// is also contained in other labels: a note listing them, so that the
/// choice is not silent (`tiger` is class 292, "tiger, Panthera tigris",
/// and also part of 282 "tiger cat" and others).
pub fn also_matching(labels: &[String], query: &str) -> Option<String> {
    let q = query.trim();
    if q.parse::<usize>().is_ok() {
        return None;
    }
    let i = find_class(labels, q).ok()?;
    let ql = q.to_lowercase();
    let others: Vec<usize> = (0..labels.len())
        .filter(|&j| j != i && labels[j].to_lowercase().contains(&ql))
        .collect();
    if others.is_empty() {
        return None;
    }
    Some(format!(
        "--class {q}: class {i} ({}) matches exactly; also containing '{q}': {}{} (give the index to pick one of them)",
        labels[i],
        others
            .iter()
            .take(5)
            .map(|&j| format!("{j} ({})", labels[j]))
            .collect::<Vec<_>>()
            .join(", "),
        if others.len() > 5 { ", ..." } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_has_1000_labels_in_order() {
        let l = imagenet();
        assert_eq!(l.len(), 1000);
        assert_eq!(l[0], "tench, Tinca tinca");
        assert_eq!(l[285], "Egyptian cat");
    }

    #[test]
    fn finds_by_index_exact_name_and_substring() {
        let l = imagenet();
        assert_eq!(find_class(l, "285"), Ok(285));
        assert_eq!(find_class(l, "tabby"), Ok(281));
        assert_eq!(find_class(l, "egyptian"), Ok(285));
        assert!(find_class(l, "1000").unwrap_err().contains("out of range"));
        assert!(find_class(l, "cat").unwrap_err().contains("matches"));
        assert!(find_class(l, "no such thing").is_err());
    }

    #[test]
    fn an_exact_name_that_other_labels_contain_is_noted() {
        let l = imagenet();
        // "tiger" is a name of 292 (tiger, Panthera tigris) and part of 282 (tiger cat)
        assert_eq!(find_class(l, "tiger"), Ok(292));
        let note = also_matching(l, "tiger").unwrap();
        assert!(
            note.contains("292") && note.contains("282 (tiger cat)"),
            "{note}"
        );
        // only one label contains "tabby"; an index is never ambiguous
        assert_eq!(also_matching(l, "tabby"), None);
        assert_eq!(also_matching(l, "282"), None);
    }
}
