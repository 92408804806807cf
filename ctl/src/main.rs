fn main() {
    println!("ctl: not built yet");
}
