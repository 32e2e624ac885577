//! Which OpenAI API a request path names, and what each one requires in the body.

/// The OpenAI endpoints the picker understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// `/v1/completions`: requires `prompt`.
    Completions,
    /// `/v1/chat/completions`: requires `messages`.
    ChatCompletions,
    /// `/v1/embeddings`: requires `input`.
    Embeddings,
    /// `/v1/responses`: requires `input` or `instructions`.
    Responses,
    /// Any other path: only `model` is read, and it is optional.
    Other,
}

impl ApiKind {
    /// Classifies a request `:path` (query string ignored).
    pub fn from_path(path: &str) -> Self {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let path = path.trim_end_matches('/');
        match path {
            "/v1/completions" => ApiKind::Completions,
            "/v1/chat/completions" => ApiKind::ChatCompletions,
            "/v1/embeddings" => ApiKind::Embeddings,
            "/v1/responses" => ApiKind::Responses,
            _ => ApiKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::Completions => "completions",
            ApiKind::ChatCompletions => "chat_completions",
            ApiKind::Embeddings => "embeddings",
            ApiKind::Responses => "responses",
            ApiKind::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let table = [
            ("/v1/completions", ApiKind::Completions),
            ("/v1/completions?x=1", ApiKind::Completions),
            ("/v1/chat/completions/", ApiKind::ChatCompletions),
            ("/v1/embeddings", ApiKind::Embeddings),
            ("/v1/responses", ApiKind::Responses),
            ("/v1/models", ApiKind::Other),
            ("/v1/completionsx", ApiKind::Other),
        ];
        for (path, want) in table {
            assert_eq!(ApiKind::from_path(path), want, "{path}");
        }
    }
}
