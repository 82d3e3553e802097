"""The `kvm` isolation tier: a Hyperlight-style micro-VM per sandbox, driven through the KVM
ioctls. The plugin, compiled from wasm to C with wasm2c (keeping wasm's bounds checks), runs
with a tiny guest runtime in a VM of its own: one memory slot, one vCPU, no devices, host
calls only through exits that the host checks against the manifest's grants. A component's
core modules are compiled each on its own and instantiated by generated glue in the guest
(vmm/component_linking.py).
"""
