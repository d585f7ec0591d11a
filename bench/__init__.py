"""bert-serving-benchmark: the original's five tables, baselines side by side, perf_analyzer (docs/PERFORMANCE.md).

    cli.py             the command: settings, the parts of a run, the summary of ratios
    server_process.py  one bert-serving-start per setting, readiness polled
    client_load.py     the original's client load: N concurrent BertClients, warm-up excluded, latencies
    baselines.py       onnxruntime on the same ONNX and sentence-transformers, in process
    perf_analyzer.py   Triton's perf_analyzer against the model, without the bridge
    process_memory.py  peak RSS of the whole service's process tree
    workload.py        sentences of chosen token lengths; the held-out multilingual set
    report.py          CSV, Markdown tables, PNG plots

Past one machine (docs/SCALING.md; root: network namespaces):

    replica_scaling.py sentences/s with 1, 2, 3 replicas on hosts of their own, and the time to route around faults
    network_faults.py  replicas, bridges and clients on test hosts; the fault scenarios (the network tests run them)
    network_hosts.py   test hosts: network namespaces on one virtual switch; partitions and loss with iptables
    delay_proxy.py     a TCP proxy that delays a replica's replies (this kernel has no tc netem)
    remote_clients.py  the 1.10 client, the openai SDK and our client, run on the clients' host
"""
