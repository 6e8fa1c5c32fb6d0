//! A blocking client of the daemon's API: what `polytune submit`,
//! `polytune status --server` and `polytune fetch` use.

use std::time::Duration;

use super::view::{StudyDetail, StudySummary};

/// A failed request: the URL and the daemon's error message (or the
/// transport's).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon could not be reached or answered garbage.
    #[error("{url}: {message}")]
    Transport {
        /// The request URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The daemon refused (4xx / 5xx).
    #[error("{url}: {status}: {message}")]
    Refused {
        /// The request URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The daemon's `error` text.
        message: String,
    },
}

/// A daemon at `base` (e.g. `http://127.0.0.1:8370`), with an optional
/// bearer token.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client; `timeout` bounds every request.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn finish(
        &self,
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String, ClientError> {
        let transport = |e: ureq::Error| ClientError::Transport {
            url: url.to_string(),
            message: e.to_string(),
        };
        let mut resp = resp.map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().map_err(transport)?;
        if status >= 400 {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or(body);
            return Err(ClientError::Refused {
                url: url.to_string(),
                status,
                message,
            });
        }
        Ok(body)
    }

    fn get(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(&url, req.call())
    }

    fn post(&self, path: &str, body: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/toml");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(&url, req.send(body))
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        text: &str,
    ) -> Result<T, ClientError> {
        serde_json::from_str(text).map_err(|e| ClientError::Transport {
            url: self.url(path),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// Submits a study config (TOML text); returns the queued study.
    pub fn submit(&self, config: &str, name: Option<&str>) -> Result<StudySummary, ClientError> {
        let path = match name {
            Some(n) => format!("/studies?name={}", encode_query(n)),
            None => "/studies".to_string(),
        };
        let text = self.post(&path, config)?;
        self.json(&path, &text)
    }

    /// Every study.
    pub fn studies(&self) -> Result<Vec<StudySummary>, ClientError> {
        let text = self.get("/studies")?;
        self.json("/studies", &text)
    }

    /// One study in full.
    pub fn study(&self, id: u64) -> Result<StudyDetail, ClientError> {
        let path = format!("/studies/{id}");
        let text = self.get(&path)?;
        self.json(&path, &text)
    }

    /// Cancels a study.
    pub fn cancel(&self, id: u64) -> Result<StudyDetail, ClientError> {
        let path = format!("/studies/{id}/cancel");
        let text = self.post(&path, "")?;
        self.json(&path, &text)
    }

    /// The tuned TOML of a finished study.
    pub fn tuned_toml(&self, id: u64) -> Result<String, ClientError> {
        self.get(&format!("/studies/{id}/tuned.toml"))
    }
}

/// Percent-encodes a query value (names are checked by the daemon; this
/// only keeps the URL well formed).
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The study list as text (one line per study).
pub fn render_list(studies: &[StudySummary]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if studies.is_empty() {
        out.push_str("no studies yet\n");
    }
    for s in studies {
        let best = s.best.as_ref().map_or("-".to_string(), |b| {
            format!(
                "ε {:?} acc {:.4} ({} seeds)",
                b.epsilon, b.mean_accuracy, b.seeds
            )
        });
        let _ = writeln!(
            out,
            "{:>4}  {:<24} {:<9} search {}/{}  confirm {}/{}  best {}{}",
            s.id,
            s.name,
            s.state,
            s.search_done,
            s.budget,
            s.confirm_done,
            s.confirm_runs,
            best,
            if s.result.is_empty() {
                String::new()
            } else {
                format!("\n      {}", s.result)
            }
        );
    }
    out
}

/// One study as text.
pub fn render_detail(d: &StudyDetail) -> String {
    use std::fmt::Write as _;
    let mut out = render_list(std::slice::from_ref(&d.summary));
    for (k, v) in &d.counts {
        let _ = writeln!(out, "      {k:<18} {v}");
    }
    if let Some(eta) = d.summary.eta_s {
        let _ = writeln!(out, "      ETA {:.0} s", eta);
    }
    for w in &d.workers {
        let _ = writeln!(
            out,
            "      worker {} ({}) {} trials, seen {:.0} s ago {}",
            w.id, w.device, w.trials_done, w.seen_s_ago, w.current
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(super::encode_query("a b/c"), "a%20b%2Fc");
        assert_eq!(super::encode_query("ok-1_2.3"), "ok-1_2.3");
    }
}
