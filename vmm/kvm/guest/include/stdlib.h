/* The guest has no allocator and no process to exit: nothing here. */
#pragma once
#include <stddef.h>
