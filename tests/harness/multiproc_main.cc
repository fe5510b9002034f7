#include "tests/harness/multiproc.h"

int main(int argc, char** argv) { return ditserve::testing::MultiprocMain(argc, argv); }
