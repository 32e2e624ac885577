//! The token-count rule shared by the picker, the simulator and the load generator.
//!
//! No tokenizer runs on the hot path: text counts as one token per [`BYTES_PER_TOKEN`] bytes
//! (rounded up), close to what BPE tokenizers give for English text. Using the same rule
//! everywhere keeps prefix-cache block boundaries aligned between the picker's hashing and the
//! simulator's KV blocks.

/// Bytes of text per token.
pub const BYTES_PER_TOKEN: usize = 4;

/// Tokens in `text` under the shared rule.
pub fn estimate_tokens(text_bytes: usize) -> usize {
    text_bytes.div_ceil(BYTES_PER_TOKEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_up() {
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(1), 1);
        assert_eq!(estimate_tokens(8), 2);
        assert_eq!(estimate_tokens(9), 3);
    }
}
