//! LoRA adapter residency: `max_loras` GPU slots and `max_cpu_loras` warm copies in CPU memory,
//! both evicted least-recently-used. Loading costs are charged by the cost model.

/// Where adapters live between steps.
#[derive(Debug, Clone)]
pub struct LoraSlots {
    max_gpu: usize,
    max_cpu: usize,
    /// Least recently used first.
    gpu: Vec<String>,
    cpu: Vec<String>,
}

/// Adapter loads a step has to pay for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Loads {
    pub from_cpu: u32,
    pub from_disk: u32,
}

impl LoraSlots {
    pub fn new(max_gpu: u32, max_cpu: u32) -> Self {
        Self {
            max_gpu: max_gpu as usize,
            max_cpu: (max_cpu.max(max_gpu)) as usize,
            gpu: Vec::new(),
            cpu: Vec::new(),
        }
    }

    fn touch(list: &mut Vec<String>, name: &str) -> bool {
        match list.iter().position(|a| a == name) {
            Some(i) => {
                let a = list.remove(i);
                list.push(a);
                true
            }
            None => false,
        }
    }

    /// Makes every adapter of `batch` resident on the GPU (at most `max_gpu` distinct, which the
    /// scheduler guarantees) and returns what had to be loaded.
    pub fn activate(&mut self, batch: &[String]) -> Loads {
        let mut loads = Loads::default();
        let missing: Vec<&String> = batch
            .iter()
            .filter(|a| !Self::touch(&mut self.gpu, a))
            .collect();
        for adapter in missing {
            if Self::touch(&mut self.cpu, adapter) {
                loads.from_cpu += 1;
            } else {
                loads.from_disk += 1;
                self.cpu.push(adapter.clone());
                if self.cpu.len() > self.max_cpu {
                    self.cpu.remove(0);
                }
            }
            // Evict the least recently used adapter that this batch does not need.
            if self.gpu.len() >= self.max_gpu
                && let Some(i) = self.gpu.iter().position(|a| !batch.contains(a))
            {
                self.gpu.remove(i);
            }
            self.gpu.push(adapter.clone());
        }
        loads
    }

    pub fn resident(&self) -> &[String] {
        &self.gpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn loads_from_disk_then_cpu_then_nothing() {
        let mut s = LoraSlots::new(1, 2);
        assert_eq!(
            s.activate(&names(&["a"])),
            Loads {
                from_cpu: 0,
                from_disk: 1
            }
        );
        assert_eq!(s.activate(&names(&["a"])), Loads::default());
        assert_eq!(
            s.activate(&names(&["b"])),
            Loads {
                from_cpu: 0,
                from_disk: 1
            }
        );
        assert_eq!(s.resident(), &names(&["b"])[..]);
        assert_eq!(
            s.activate(&names(&["a"])),
            Loads {
                from_cpu: 1,
                from_disk: 0
            }
        );
        // c pushes a out of the 2-entry CPU cache? No: LRU in CPU is b (a was touched last).
        assert_eq!(
            s.activate(&names(&["c"])),
            Loads {
                from_cpu: 0,
                from_disk: 1
            }
        );
        assert_eq!(
            s.activate(&names(&["b"])),
            Loads {
                from_cpu: 0,
                from_disk: 1
            }
        );
    }
}
