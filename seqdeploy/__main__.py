from seqdeploy.app.console import main

if __name__ == "__main__":
    main()
