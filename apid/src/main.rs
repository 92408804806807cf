fn main() {
    println!("apid: not built yet");
}
