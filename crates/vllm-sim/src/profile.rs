//! Hardware and model profiles: the physical numbers the cost model runs on. Sources are in the
//! crate README.

use std::str::FromStr;

/// A GPU: dense FP16/BF16 tensor throughput, HBM bandwidth and memory visible to the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuProfile {
    pub name: &'static str,
    /// Dense FP16/BF16 tensor-core FLOP/s (no sparsity).
    pub peak_flops: f64,
    /// Memory bandwidth in bytes/s.
    pub hbm_bandwidth: f64,
    /// Total device memory in bytes as the CUDA runtime reports it.
    pub memory_bytes: f64,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub const A10: GpuProfile = GpuProfile {
    name: "A10",
    peak_flops: 125e12,
    hbm_bandwidth: 600e9,
    memory_bytes: 22.5 * GIB,
};
pub const L4: GpuProfile = GpuProfile {
    name: "L4",
    peak_flops: 121e12,
    hbm_bandwidth: 300e9,
    memory_bytes: 22.5 * GIB,
};
pub const A100_80GB: GpuProfile = GpuProfile {
    name: "A100-80GB",
    peak_flops: 312e12,
    hbm_bandwidth: 2039e9,
    memory_bytes: 79.2 * GIB,
};
pub const A100_40GB: GpuProfile = GpuProfile {
    name: "A100-40GB",
    peak_flops: 312e12,
    hbm_bandwidth: 1555e9,
    memory_bytes: 39.4 * GIB,
};
pub const H100: GpuProfile = GpuProfile {
    name: "H100",
    peak_flops: 989e12,
    hbm_bandwidth: 3350e9,
    memory_bytes: 79.1 * GIB,
};

impl FromStr for GpuProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.to_ascii_lowercase().replace(['_', ' '], "-");
        Ok(match key.as_str() {
            "a10" | "a10g" => A10,
            "l4" => L4,
            "a100" | "a100-80gb" | "a100-80g" => A100_80GB,
            "a100-40gb" | "a100-40g" => A100_40GB,
            "h100" | "h100-80gb" | "h100-sxm" => H100,
            _ => {
                return Err(format!(
                    "unknown GPU profile {s:?} (A10, L4, A100-80GB, A100-40GB, H100)"
                ));
            }
        })
    }
}

/// A decoder-only transformer: what sets its weight bytes, FLOPs per token and KV bytes per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelProfile {
    pub name: &'static str,
    pub params: f64,
    pub layers: u32,
    pub hidden: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Bytes per weight and per KV element (FP16/BF16 = 2).
    pub dtype_bytes: u32,
    /// Default context length.
    pub max_model_len: u32,
}

pub const LLAMA_2_7B: ModelProfile = ModelProfile {
    name: "meta-llama/Llama-2-7b-hf",
    params: 6.74e9,
    layers: 32,
    hidden: 4096,
    kv_heads: 32,
    head_dim: 128,
    dtype_bytes: 2,
    max_model_len: 4096,
};
pub const LLAMA_3_8B: ModelProfile = ModelProfile {
    name: "meta-llama/Meta-Llama-3-8B",
    params: 8.03e9,
    layers: 32,
    hidden: 4096,
    kv_heads: 8,
    head_dim: 128,
    dtype_bytes: 2,
    max_model_len: 8192,
};
pub const QWEN_2_5_32B: ModelProfile = ModelProfile {
    name: "Qwen/Qwen2.5-32B",
    params: 32.8e9,
    layers: 64,
    hidden: 5120,
    kv_heads: 8,
    head_dim: 128,
    dtype_bytes: 2,
    max_model_len: 32768,
};

impl ModelProfile {
    pub fn weight_bytes(&self) -> f64 {
        self.params * f64::from(self.dtype_bytes)
    }

    /// K and V for every layer: 2 x layers x kv_heads x head_dim x dtype bytes.
    pub fn kv_bytes_per_token(&self) -> f64 {
        2.0 * f64::from(self.layers)
            * f64::from(self.kv_heads)
            * f64::from(self.head_dim)
            * f64::from(self.dtype_bytes)
    }

    /// Bytes of one LoRA adapter of `rank` on q_proj and v_proj of every layer.
    pub fn lora_bytes(&self, rank: u32) -> f64 {
        // Each adapted projection adds A (hidden x r) and B (r x out); q and v are hidden-wide
        // for the input and (heads or kv_heads) x head_dim for the output.
        let q_out = f64::from(self.hidden);
        let v_out = f64::from(self.kv_heads * self.head_dim);
        let per_layer = f64::from(rank) * (2.0 * f64::from(self.hidden) + q_out + v_out);
        per_layer * f64::from(self.layers) * f64::from(self.dtype_bytes)
    }
}

impl FromStr for ModelProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.to_ascii_lowercase();
        if key.contains("llama-2-7b") {
            Ok(LLAMA_2_7B)
        } else if key.contains("llama-3-8b") || key.contains("llama-3.1-8b") {
            Ok(LLAMA_3_8B)
        } else if key.contains("32b") {
            Ok(QWEN_2_5_32B)
        } else {
            Err(format!(
                "unknown model profile {s:?} (Llama-2-7B, Llama-3-8B, Qwen2.5-32B)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_bytes_per_token_from_architecture() {
        // Llama-2-7B: 2 x 32 x 32 x 128 x 2 = 512 KiB; Llama-3-8B uses GQA (8 KV heads).
        assert_eq!(LLAMA_2_7B.kv_bytes_per_token(), 524_288.0);
        assert_eq!(LLAMA_3_8B.kv_bytes_per_token(), 131_072.0);
        assert!("A10".parse::<GpuProfile>().is_ok());
        assert!("llama-2-7b".parse::<ModelProfile>().is_ok());
        assert!("gpt-2".parse::<ModelProfile>().is_err());
    }
}
