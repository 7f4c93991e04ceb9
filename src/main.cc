#include "cli/commands.h"

int main(int argc, char** argv) { return tidepool::cli::Main(argc, argv); }
