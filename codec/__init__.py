"""Personal data in Temporal: the encrypting payload codec, its keys, the codec server that lets
the Web UI read and type clear JSON, and crypto-shredding on erasure (see the README's
"Personal data" section)."""
