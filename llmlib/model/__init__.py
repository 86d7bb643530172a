"""The engine model in virtual time, the fleet simulator, clocks, pseudo tokens, the tiny Llama in
numpy."""
