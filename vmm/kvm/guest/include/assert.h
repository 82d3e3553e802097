/* Built with NDEBUG: wasm2c's asserts check the embedder, which is the runtime. */
#pragma once
#define assert(x) ((void)0)
