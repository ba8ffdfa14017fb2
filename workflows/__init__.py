"""Task routes (data), the job state, `mora.run()` and the conversational entry `mora.chat()`."""
