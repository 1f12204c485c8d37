//! Secret interpolation in config string values: `${VAR}` from the environment,
//! `${file:PATH}` from a file (trailing newline removed), `$${` for a literal `${`.

use std::path::Path;

use super::ConfigIssue;

/// Key names whose values are secrets: they should come from `${ENV}` or `${file:PATH}`.
const SECRET_KEYS: [&str; 8] = [
    "password",
    "secret",
    "token",
    "client_secret",
    "sasl_password",
    "ssl_key_password",
    "hec_token",
    "connection_string",
];

/// Key paths of secret-named keys whose value is written literally in the config text.
pub fn literal_secrets(value: &toml::Value) -> Vec<String> {
    fn walk(v: &toml::Value, path: String, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    if let toml::Value::String(s) = v {
                        let name = k.to_ascii_lowercase();
                        if SECRET_KEYS
                            .iter()
                            .any(|x| name == *x || name.ends_with(&format!("_{x}")))
                            && !s.is_empty()
                            && !s.contains("${")
                        {
                            out.push(p.clone());
                        }
                    }
                    walk(v, p, out);
                }
            }
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, String::new(), &mut out);
    out
}

/// Replace references in every string of the tree; returns the problems, each at its key path.
pub fn interpolate(value: &mut toml::Value, base: Option<&Path>) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    walk(value, String::new(), base, &mut issues);
    issues
}

fn walk(value: &mut toml::Value, path: String, base: Option<&Path>, issues: &mut Vec<ConfigIssue>) {
    match value {
        toml::Value::String(s) if s.contains('$') => match expand(s, base) {
            Ok(new) => *s = new,
            Err(msg) => issues.push(ConfigIssue::new(path, msg)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), base, issues);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(v, p, base, issues);
            }
        }
        _ => {}
    }
}

fn expand(s: &str, base: Option<&Path>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated `${` reference".to_string())?;
            let reference = &tail[..end];
            out.push_str(&resolve(reference, base)?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(reference: &str, base: Option<&Path>) -> Result<String, String> {
    if let Some(path) = reference.strip_prefix("file:") {
        let p = Path::new(path);
        let full = match base {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.to_path_buf(),
        };
        let text =
            std::fs::read_to_string(&full).map_err(|e| format!("cannot read secret file `{}`: {e}", full.display()))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    let (name, default) = match reference.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`${{{reference}}}` is not a valid variable name"));
    }
    // As in the shell and Compose, `${VAR:-default}` takes the default when the variable is
    // unset or empty (a Compose file passing `VAR=` through must not blank a value).
    match std::env::var(name) {
        Ok(v) if !(v.is_empty() && default.is_some()) => Ok(v),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("environment variable `{name}` is not valid UTF-8")),
        _ => default
            .map(str::to_string)
            .ok_or_else(|| format!("environment variable `{name}` is not set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_env_file_and_escape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "s3cret\n").unwrap();
        std::env::set_var("M365FWD_TEST_INTERP", "abc");
        assert_eq!(expand("x-${M365FWD_TEST_INTERP}-y", None).unwrap(), "x-abc-y");
        assert_eq!(expand("${file:tok}", Some(dir.path())).unwrap(), "s3cret");
        assert_eq!(expand("$${literal}", None).unwrap(), "${literal}");
        assert_eq!(expand("cost $5", None).unwrap(), "cost $5");
        assert_eq!(expand("${M365FWD_UNSET_VAR:-dflt}", None).unwrap(), "dflt");
        // Empty counts as unset for `:-` (shell and Compose semantics), not without it.
        std::env::set_var("M365FWD_TEST_INTERP_EMPTY", "");
        assert_eq!(expand("h=${M365FWD_TEST_INTERP_EMPTY:-fwd}", None).unwrap(), "h=fwd");
        assert_eq!(expand("h=${M365FWD_TEST_INTERP_EMPTY}", None).unwrap(), "h=");
        assert_eq!(expand("${M365FWD_TEST_INTERP:-dflt}", None).unwrap(), "abc");
        assert!(expand("${M365FWD_UNSET_VAR}", None)
            .unwrap_err()
            .contains("M365FWD_UNSET_VAR"));
    }
}
