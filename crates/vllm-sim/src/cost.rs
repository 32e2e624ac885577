//! The physical cost model: how long one engine step takes on the simulated GPU, and how many KV
//! blocks fit in its memory. Formulas and calibration are documented in the crate README.

use crate::profile::{GpuProfile, ModelProfile};

/// Efficiencies and fixed costs; defaults are the calibrated values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Fraction of peak FLOP/s reached by the forward pass (prefill-bound steps).
    pub compute_efficiency: f64,
    /// Fraction of HBM bandwidth reached when streaming weights and KV (decode-bound steps).
    pub memory_efficiency: f64,
    /// Scheduler, sampling and launch overhead per step, seconds.
    pub step_overhead: f64,
    /// CPU-side work per scheduled sequence per step (scheduling, sampling, detokenising), seconds.
    pub per_sequence_overhead: f64,
    /// Relative slowdown of a step whose batch contains LoRA requests.
    pub lora_overhead: f64,
    /// Host-to-device bandwidth for loading an adapter held in CPU memory, bytes/s.
    pub pcie_bandwidth: f64,
    /// Disk read bandwidth for an adapter not held in CPU memory, bytes/s.
    pub disk_bandwidth: f64,
    /// Fixed cost of loading an adapter from disk (file open, deserialisation), seconds.
    pub disk_load_fixed: f64,
    /// Memory the engine keeps outside weights and KV (CUDA context, activations), bytes.
    pub reserved_memory: f64,
}

impl Default for Calibration {
    fn default() -> Self {
        Self {
            compute_efficiency: 0.55,
            memory_efficiency: 0.84,
            step_overhead: 0.001,
            per_sequence_overhead: 0.000_15,
            lora_overhead: 0.10,
            pcie_bandwidth: 25e9,
            disk_bandwidth: 2e9,
            disk_load_fixed: 0.020,
            reserved_memory: 1.5 * 1024.0 * 1024.0 * 1024.0,
        }
    }
}

/// What one step does, as far as its cost goes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepWork {
    /// Tokens run through the model this step (prefill chunks + one per decoding sequence).
    pub tokens: u64,
    /// Sequences scheduled this step.
    pub sequences: u32,
    /// KV entries read by attention: the context length of every scheduled sequence.
    pub kv_tokens_read: u64,
    /// Any LoRA request in the batch.
    pub lora_in_batch: bool,
    /// Adapters moved from CPU memory to the GPU this step.
    pub lora_loads_from_cpu: u32,
    /// Adapters read from disk this step.
    pub lora_loads_from_disk: u32,
}

/// The cost model for one model on one GPU.
#[derive(Debug, Clone, Copy)]
pub struct CostModel {
    pub model: ModelProfile,
    pub gpu: GpuProfile,
    pub calibration: Calibration,
    /// Bytes of one adapter (from --max-lora-rank).
    pub lora_bytes: f64,
}

impl CostModel {
    pub fn new(
        model: ModelProfile,
        gpu: GpuProfile,
        calibration: Calibration,
        lora_rank: u32,
    ) -> Self {
        Self {
            model,
            gpu,
            calibration,
            lora_bytes: model.lora_bytes(lora_rank),
        }
    }

    /// compute = 2 x params x tokens / (peak x efficiency).
    pub fn compute_time(&self, tokens: u64) -> f64 {
        2.0 * self.model.params * tokens as f64
            / (self.gpu.peak_flops * self.calibration.compute_efficiency)
    }

    /// memory = (weights + KV read) / (bandwidth x efficiency).
    pub fn memory_time(&self, kv_tokens_read: u64) -> f64 {
        (self.model.weight_bytes() + kv_tokens_read as f64 * self.model.kv_bytes_per_token())
            / (self.gpu.hbm_bandwidth * self.calibration.memory_efficiency)
    }

    /// step = overhead (fixed + per sequence) + max(compute, memory), x (1 + LoRA overhead) when adapters run, plus
    /// adapter loads.
    pub fn step_time(&self, work: &StepWork) -> f64 {
        if work.tokens == 0 {
            return 0.0;
        }
        let c = &self.calibration;
        let mut t = c.step_overhead
            + c.per_sequence_overhead * f64::from(work.sequences)
            + self
                .compute_time(work.tokens)
                .max(self.memory_time(work.kv_tokens_read));
        if work.lora_in_batch {
            t *= 1.0 + c.lora_overhead;
        }
        t += f64::from(work.lora_loads_from_cpu) * self.lora_bytes / c.pcie_bandwidth;
        t += f64::from(work.lora_loads_from_disk)
            * (c.disk_load_fixed
                + self.lora_bytes / c.disk_bandwidth
                + self.lora_bytes / c.pcie_bandwidth);
        t
    }

    /// KV blocks that fit: (memory x utilisation - weights - reserved) / (block_size x KV bytes/token).
    pub fn kv_blocks(&self, gpu_memory_utilization: f64, block_size: u32) -> u64 {
        let free = self.gpu.memory_bytes * gpu_memory_utilization
            - self.model.weight_bytes()
            - self.calibration.reserved_memory;
        let per_block = f64::from(block_size) * self.model.kv_bytes_per_token();
        if free <= 0.0 {
            0
        } else {
            (free / per_block).floor() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{A10, A100_40GB, A100_80GB, LLAMA_2_7B, LLAMA_3_8B};

    #[test]
    fn decode_is_memory_bound_and_prefill_compute_bound() {
        let m = CostModel::new(LLAMA_2_7B, A100_80GB, Calibration::default(), 16);
        let decode = StepWork {
            tokens: 1,
            sequences: 1,
            kv_tokens_read: 100,
            ..Default::default()
        };
        let prefill = StepWork {
            tokens: 2000,
            sequences: 1,
            kv_tokens_read: 2000,
            ..Default::default()
        };
        assert!(m.memory_time(100) > m.compute_time(1));
        assert!(m.compute_time(2000) > m.memory_time(2000));
        assert!(m.step_time(&prefill) > 10.0 * m.step_time(&decode));
    }

    #[test]
    fn calibration_anchor_llama31_8b_a100_40gb() {
        // 75 tok/s single-stream decode (vLLM 0.23, 1024-token prompt) — see README.
        let m = CostModel::new(LLAMA_3_8B, A100_40GB, Calibration::default(), 16);
        let step = m.step_time(&StepWork {
            tokens: 1,
            sequences: 1,
            kv_tokens_read: 1024 + 64,
            ..Default::default()
        });
        let tok_per_s = 1.0 / step;
        assert!((tok_per_s - 75.0).abs() / 75.0 < 0.05, "{tok_per_s}");
    }

    #[test]
    fn kv_capacity_llama2_7b_a10() {
        let m = CostModel::new(LLAMA_2_7B, A10, Calibration::default(), 16);
        let blocks = m.kv_blocks(0.9, 16);
        // ~5.2 GiB free for KV at 0.5 MiB/token: a few hundred 16-token blocks.
        assert!((500..900).contains(&blocks), "{blocks}");
    }
}
