/* Every hook keeps the SDK's default: forward unchanged. */
#include "hyperfilter.h"
