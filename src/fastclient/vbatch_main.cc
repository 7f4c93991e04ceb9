#include "fastclient/fast_client.h"

int main(int argc, char** argv) { return tidepool::fastclient::Main(tidepool::fastclient::Mode::kBatch, argc, argv); }
