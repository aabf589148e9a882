// Microphone capture for Cascade's web page: the AudioContext runs at 24 kHz, the
// Realtime API's rate; every 40 ms (960 samples) the block goes to the page, with the
// frame number of its first sample (the AudioContext's own sample clock).
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(960);
    this.filled = 0;
    this.first = null;
  }
  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (input) {
      let i = 0;
      while (i < input.length) {
        if (this.filled === 0) this.first = currentFrame + i;
        const take = Math.min(input.length - i, this.block.length - this.filled);
        this.block.set(input.subarray(i, i + take), this.filled);
        this.filled += take;
        i += take;
        if (this.filled === this.block.length) {
          this.port.postMessage({samples: this.block, frame: this.first});
          this.block = new Float32Array(960);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}
registerProcessor('capture', Capture);
