/* What wasm2c's output uses of libm; vmm/kvm/guest/runtime.c implements the functions. */
#pragma once
#define NAN __builtin_nanf("")
#define INFINITY __builtin_inff()
#define isnan(x) __builtin_isnan(x)
#define signbit(x) __builtin_signbit(x)
double ceil(double x);
double floor(double x);
double trunc(double x);
double nearbyint(double x);
double sqrt(double x);
double fabs(double x);
float ceilf(float x);
float floorf(float x);
float truncf(float x);
float nearbyintf(float x);
float sqrtf(float x);
float fabsf(float x);
