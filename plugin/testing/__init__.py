"""What the tests and the benchmarks drive selfmoa with, over real HTTP: live processes (`selfmoa
serve`, stock optillm, llama.cpp's server with a tiny made-up model or a real small one) and a
catalogue of hostile request bodies. Shipped with the package so that benchmarks (and anyone
testing a deployment) need no test module; nothing here runs at import."""
