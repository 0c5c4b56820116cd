"""ZIP export per accession number: jobs, routing (local store or remote), archives."""
